-- Drop a job from its bucket of an index (running or settling), unless someone wrote its entry since `score` was read.
local bucket = KEYS[1]
local job_id = ARGV[1]
local score = ARGV[2]

local current = redis.call('ZSCORE', bucket, job_id)
if current and tonumber(current) == tonumber(score) then
  redis.call('ZREM', bucket, job_id)
  return 1
end
return 0
