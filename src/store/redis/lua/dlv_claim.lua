-- Claims due webhook deliveries (see src/store/redis/deliveries.rs): each is held (its due time
-- moved to the end of the hold) under the claim's token, so one process at a time attempts it.
--
-- ARGV[1] prefix, ARGV[2] now (µs), ARGV[3] end of the hold (µs), ARGV[4] most to claim,
-- ARGV[5] token.
-- Returns 8 values per claimed delivery: id, job id, url, event id, event JSON, created (µs),
-- attempts so far, next due ('' = created).
local P = ARGV[1]
local due = P .. ':dlv:due'
local ids = redis.call('ZRANGEBYSCORE', due, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, n in ipairs(ids) do
  local k = P .. ':dlv:' .. n
  local f = redis.call('HMGET', k, 'j', 'u', 'e', 'b', 't', 'st', 'n', 'due')
  if f[1] and f[6] == 'pending' then
    redis.call('ZADD', due, ARGV[3], n)
    redis.call('HSET', k, 'c', ARGV[5])
    out[#out + 1] = n
    for i = 1, 5 do out[#out + 1] = f[i] end
    out[#out + 1] = f[7] or '0'
    out[#out + 1] = f[8] or ''
  else
    redis.call('ZREM', due, n)
  end
end
return out
