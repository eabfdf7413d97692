-- Start an attempt: take the job's lease and count the attempt. Returns {'started', attempt},
-- {'cancel', attempt} (cancel requested before a worker took it), or {reason}: 'missing',
-- 'finished', 'busy' (another attempt holds a live lease).
local meta = KEYS[1]
local running = KEYS[2]
local job_id = ARGV[1]
local lease_ms = ARGV[2]
local started_at = ARGV[3]
local ttl_s = ARGV[4]

local status = redis.call('HGET', meta, 'status')
if not status then return {'missing'} end
if is_terminal(status) then return {'finished'} end
local now_ms = server_now_ms()
local lease = redis.call('ZSCORE', running, job_id)
if lease and tonumber(lease) > now_ms then return {'busy'} end
local attempt = redis.call('HINCRBY', meta, 'attempt', 1)
redis.call('ZADD', running, now_ms + tonumber(lease_ms), job_id)
redis.call('HSET', meta, 'status', 'running', 'started_at', started_at)
redis.call('EXPIRE', meta, ttl_s)
if redis.call('HGET', meta, 'cancel_requested') == '1' then return {'cancel', attempt} end
return {'started', attempt}
