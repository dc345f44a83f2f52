-- Records an attempt of a claimed webhook delivery (see src/store/redis/deliveries.rs), only
-- while the claim is still the caller's.
--
-- ARGV[1] prefix, ARGV[2] delivery id, ARGV[3] claim token, ARGV[4] the attempt (JSON),
-- ARGV[5] new state, ARGV[6] next due (µs, '' none), ARGV[7] end time (µs, '' none),
-- ARGV[8] attempts kept.
-- Returns 1 when recorded, 0 when the claim was lost.
local P = ARGV[1]
local id = ARGV[2]
local k = P .. ':dlv:' .. id
if redis.call('HGET', k, 'c') ~= ARGV[3] then return 0 end
redis.call('HINCRBY', k, 'n', 1)
redis.call('HSET', k, 'st', ARGV[5])
redis.call('HDEL', k, 'c')
local lk = P .. ':dlvlog:' .. id
redis.call('RPUSH', lk, ARGV[4])
redis.call('LTRIM', lk, -tonumber(ARGV[8]), -1)
if ARGV[6] ~= '' then
  redis.call('ZADD', P .. ':dlv:due', ARGV[6], id)
  redis.call('HSET', k, 'due', ARGV[6])
else
  redis.call('ZREM', P .. ':dlv:due', id)
  redis.call('HDEL', k, 'due')
  redis.call('ZADD', P .. ':dlv:done', ARGV[7], id)
end
return 1
