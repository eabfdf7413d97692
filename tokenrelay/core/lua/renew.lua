-- Renew a running attempt's lease. Takes it again if it ran out while nobody claimed the job (a
-- heartbeat that came late). Returns 1 if this attempt holds the lease, 0 if another one owns the job.
local meta = KEYS[1]
local lease = KEYS[2]
local attempt = ARGV[1]
local lease_ms = ARGV[2]

local held = redis.call('GET', lease)
if held == attempt then
  redis.call('PEXPIRE', lease, lease_ms)
  return 1
end
if held then return 0 end
if redis.call('HGET', meta, 'attempt') ~= attempt or redis.call('HGET', meta, 'status') ~= 'running' then
  return 0
end
redis.call('SET', lease, attempt, 'PX', lease_ms)
return 1
