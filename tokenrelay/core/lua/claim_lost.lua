-- Claim a job whose lease ran out: exactly one caller gets 1 and must enqueue it again.
local running = KEYS[1]
local meta = KEYS[2]
local job_id = ARGV[1]
local now_ms = ARGV[2]

local lease = redis.call('ZSCORE', running, job_id)
if not lease or tonumber(lease) > tonumber(now_ms) then return 0 end
redis.call('ZREM', running, job_id)
local status = redis.call('HGET', meta, 'status')
if status ~= 'running' then return 0 end
redis.call('HSET', meta, 'status', 'queued')
return 1
