-- Start an attempt: take the job's lease and count the attempt. Returns {'started', attempt},
-- {'cancel', attempt} (cancel requested before a worker took it), or {reason}: 'missing',
-- 'finished', 'busy' (another attempt holds a live lease). The lease is a key in the job's slot that
-- expires unless its worker renews it (renew.lua). With a worker id, the record names that worker
-- (reapers check its liveness) and comes back as a third element (HGETALL's flat list).
local meta = KEYS[1]
local lease = KEYS[2]
local lease_ms = ARGV[1]
local started_at = ARGV[2]
local ttl_s = ARGV[3]
local worker = ARGV[4]

local status = redis.call('HGET', meta, 'status')
if not status then return {'missing'} end
if is_terminal(status) then return {'finished'} end
if redis.call('EXISTS', lease) == 1 then return {'busy'} end
local attempt = redis.call('HINCRBY', meta, 'attempt', 1)
redis.call('SET', lease, attempt, 'PX', lease_ms)
redis.call('HSET', meta, 'status', 'running', 'started_at', started_at)
redis.call('EXPIRE', meta, ttl_s)
local outcome = 'started'
if redis.call('HGET', meta, 'cancel_requested') == '1' then outcome = 'cancel' end
if worker and worker ~= '' then
  redis.call('HSET', meta, 'worker', worker)
  return {outcome, attempt, redis.call('HGETALL', meta)}
end
return {outcome, attempt}
