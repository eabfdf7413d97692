-- Claim a job whose lease ran out: exactly one caller gets 'claimed' and must enqueue it again.
-- 'alive': an attempt holds the lease; 'idle': the job is not running (nothing to do).
local meta = KEYS[1]
local lease = KEYS[2]

if redis.call('EXISTS', lease) == 1 then return 'alive' end
if redis.call('HGET', meta, 'status') ~= 'running' then return 'idle' end
redis.call('HSET', meta, 'status', 'queued')
return 'claimed'
