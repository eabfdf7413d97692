-- Cancel a job. Returns {outcome, status}: {'missing'}, {'finished', <status>} (nothing to do),
-- {'cancelled', 'cancelled'} (a queued job, ended here) or {'cancelling', <status>} (its worker stops it).
-- One slot: the job's keys; `live` is its notification channel (same hash tag).
local meta = KEYS[1]
local events = KEYS[2]
local end_data = ARGV[1]
local finished_at = ARGV[2]
local retention_s = ARGV[3]
local live = ARGV[4]

local status = redis.call('HGET', meta, 'status')
if not status then return {'missing'} end
if is_terminal(status) then return {'finished', status} end
redis.call('HSET', meta, 'cancel_requested', '1')
if status == 'queued' then
  local attempt = tonumber(redis.call('HGET', meta, 'attempt') or '0')
  redis.call('XADD', events, tostring(attempt + 1) .. '-0', 'e', 'end', 'd', end_data)
  redis.call('HSET', meta, 'status', 'cancelled', 'finished_at', finished_at, 'finish_reason', 'cancelled')
  redis.call('EXPIRE', meta, retention_s)
  redis.call('EXPIRE', events, retention_s)
  redis.call('SPUBLISH', live, '')
  return {'cancelled', 'cancelled'}
end
return {'cancelling', status}
