-- Claims due webhook deliveries (see src/store/redis/deliveries.rs): each is held (its due time
-- moved to the end of the hold) under the claim's token, so one process at a time attempts it.
--
-- KEYS[1] `P:dlv:due`. The deliveries' hashes are named by the numbers found there, so they
-- cannot be declared beforehand: ARGV[5] is their prefix `P:dlv:` (Redis Cluster: see
-- docs/redis.md, every key in one hash slot through the prefix's hash tag).
-- ARGV[1] now (µs), ARGV[2] end of the hold (µs), ARGV[3] most to claim, ARGV[4] token,
-- ARGV[5] delivery key prefix.
-- Returns 8 values per claimed delivery: id, job id, url, event id, event JSON, created (µs),
-- attempts so far, next due ('' = created).
local due = KEYS[1]
local now, hold_until, max, token, dlv_prefix =
  ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local ids = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, max)
local out = {}
for _, n in ipairs(ids) do
  local k = dlv_prefix .. n
  local f = redis.call('HMGET', k, 'j', 'u', 'e', 'b', 't', 'st', 'n', 'due')
  if f[1] and f[6] == 'pending' then
    redis.call('ZADD', due, hold_until, n)
    redis.call('HSET', k, 'c', token)
    out[#out + 1] = n
    for i = 1, 5 do out[#out + 1] = f[i] end
    out[#out + 1] = f[7] or '0'
    out[#out + 1] = f[8] or ''
  else
    redis.call('ZREM', due, n)
  end
end
return out
