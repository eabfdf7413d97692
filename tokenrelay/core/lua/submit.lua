-- Admit a job in one step, on a single server (or Sentinel primary) that is also the Celery broker:
-- the keys of several slots, so never on a cluster (tokenrelay/core/submit.py decides).
-- With a per-minute limit, the request is counted first (as the gateway's middleware counts any other
-- request) and refused with {'rate_limited'} over the limit, nothing else written.
-- Returns {'held', value} (the Idempotency-Key names an earlier job: nothing written), {'queue_full'},
-- {'active_full'} (nothing written either: the caller drops finished jobs from the set and tries
-- again), or {'admitted'}: the active-job slot, the record, its indexes, the Idempotency-Key and the
-- task message, all written, so no outbox is needed. Writes exactly what store.create_job writes.
local queue = KEYS[1]
local active = KEYS[2]
local meta = KEYS[3]
local recent = KEYS[4]
local owner_jobs = KEYS[5]

local max_queued = ARGV[1]
local max_active = ARGV[2]
local active_ttl_s = ARGV[3]
local job_id = ARGV[4]
local now = ARGV[5]  -- unix seconds: the active set's score and the indexes' (created)
local ttl_s = ARGV[6]
local recent_kept = ARGV[7]
local owner_kept = ARGV[8]
local task = ARGV[9]
local idempotency_value = ARGV[10]  -- '' without an Idempotency-Key
local rate_limit = ARGV[11]  -- '' when the request is not counted here
local rate_ttl_s = ARGV[12]
-- ARGV[13..]: the record's fields, name then value
-- KEYS[6..]: the request counter's window (with a rate limit), then the Idempotency-Key (with one)
local next_key = 6
local rate, idempotency
if rate_limit ~= '' then rate = KEYS[next_key]; next_key = next_key + 1 end
if idempotency_value ~= '' then idempotency = KEYS[next_key] end

if rate then
  local count = redis.call('INCRBY', rate, 1)  -- INCRBY, as the middleware counts (ACLs name it)
  redis.call('EXPIRE', rate, rate_ttl_s)
  if count > tonumber(rate_limit) then return {'rate_limited'} end
end
if idempotency then
  local held = redis.call('GET', idempotency)
  if held then return {'held', held} end
end
if redis.call('LLEN', queue) >= tonumber(max_queued) then return {'queue_full'} end
-- The set also holds jobs that finished since: counted here, dropped by the caller only when over.
if redis.call('ZCARD', active) >= tonumber(max_active) then return {'active_full'} end

redis.call('ZADD', active, now, job_id)
redis.call('EXPIRE', active, active_ttl_s)
redis.call('HSET', meta, unpack(ARGV, 13))
redis.call('EXPIRE', meta, ttl_s)
redis.call('ZADD', recent, now, job_id)
redis.call('ZREMRANGEBYRANK', recent, 0, -tonumber(recent_kept) - 1)
redis.call('ZADD', owner_jobs, now, job_id)
redis.call('ZREMRANGEBYRANK', owner_jobs, 0, -tonumber(owner_kept) - 1)
redis.call('EXPIRE', owner_jobs, ttl_s)
if idempotency then redis.call('SET', idempotency, idempotency_value, 'EX', ttl_s) end
redis.call('LPUSH', queue, task)
return {'admitted'}
