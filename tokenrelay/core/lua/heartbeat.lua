-- Renew the leases of one worker process's running jobs, and mark the process alive.
-- Returns the server time in ms.
local running = KEYS[1]
local workers = KEYS[2]
local lease_ms = ARGV[1]
local worker_id = ARGV[2]
local first_job_id = 3  -- the rest of ARGV: the process's running job ids

local now_ms = server_now_ms()
redis.call('ZADD', workers, now_ms, worker_id)
for i = first_job_id, #ARGV do
  redis.call('ZADD', running, 'XX', now_ms + tonumber(lease_ms), ARGV[i])
end
return now_ms
