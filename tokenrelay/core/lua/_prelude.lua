-- Prepended to every script at load time (after a shebang line): helpers written once.

local function is_terminal(status)
  return status == 'succeeded' or status == 'failed' or status == 'cancelled'
end

local function server_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
