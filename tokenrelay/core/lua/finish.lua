#!lua flags=allow-oom
-- Write an attempt's end (and its error, when its stream could not) and its record. Returns
-- 'written', 'already_finished', or 'superseded' (another attempt owns the job).
-- allow-oom: a job's last few bytes always land, even at maxmemory with noeviction, so its
-- readers get their `end` instead of waiting for one that Redis refuses.
local meta = KEYS[1]
local events = KEYS[2]
local lease = KEYS[3]
local attempt = ARGV[1]
local end_id = ARGV[2]
local end_data = ARGV[3]
local retention_s = ARGV[4]
local error_id = ARGV[5]  -- '' when there is no error entry to write
local error_data = ARGV[6]
local live = ARGV[7]  -- the job's notification channel
local first_record_field = 8  -- the rest of ARGV: field/value pairs for the record

local status = redis.call('HGET', meta, 'status')
if not status then return 'superseded' end
if redis.call('HGET', meta, 'attempt') ~= attempt then return 'superseded' end
if is_terminal(status) then return 'already_finished' end
if error_id ~= '' then redis.call('XADD', events, error_id, 'e', 'error', 'd', error_data) end
redis.call('XADD', events, end_id, 'e', 'end', 'd', end_data)
redis.call('HSET', meta, unpack(ARGV, first_record_field))
redis.call('EXPIRE', meta, retention_s)
redis.call('EXPIRE', events, retention_s)
redis.call('DEL', lease)
redis.call('SPUBLISH', live, '')
return 'written'
