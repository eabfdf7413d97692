-- Append one attempt's batch to a job's stream, only where this attempt left it. Returns {'ok'};
-- {'ahead', <last id>} when the stream already holds the batch's first id or later (this batch's own
-- retry that landed, or a newer attempt); {'behind', <last id or ''>} when entries this attempt had
-- written are gone (a failover lost writes the old primary had acknowledged).
local events = KEYS[1]
local after = ARGV[1]  -- the last id this attempt wrote; '' before its first write
local live = ARGV[2]  -- the job's notification channel (same slot)
local ttl_s = ARGV[3]  -- '' unless the stream's expiry is set with this write
local first_entry = 4  -- the rest of ARGV: id, type, data of each entry, in order

local function older(x, y)
  local xa, xs = string.match(x, '^(%d+)-(%d+)$')
  local ya, ys = string.match(y, '^(%d+)-(%d+)$')
  xa, xs, ya, ys = tonumber(xa), tonumber(xs), tonumber(ya), tonumber(ys)
  return xa < ya or (xa == ya and xs < ys)
end

local newest = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)[1]
local top = newest and newest[1]
if top and not older(top, ARGV[first_entry]) then return {'ahead', top} end
if after ~= '' and top ~= after then return {'behind', top or ''} end
local last
for i = first_entry, #ARGV, 3 do
  redis.call('XADD', events, ARGV[i], 'e', ARGV[i + 1], 'd', ARGV[i + 2])
  last = ARGV[i]
end
if ttl_s ~= '' then redis.call('EXPIRE', events, ttl_s) end
redis.call('SPUBLISH', live, last)
return {'ok'}
