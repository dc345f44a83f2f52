-- Records an attempt of a claimed webhook delivery (see src/store/redis/deliveries.rs), only
-- while the claim is still the caller's, in place of the claim's attempt started (field `a`).
--
-- KEYS[1] the delivery `P:dlv:{n}`, KEYS[2] its attempts `P:dlvlog:{n}`, KEYS[3] `P:dlv:due`,
-- KEYS[4] `P:dlv:done`.
-- ARGV[1] delivery id, ARGV[2] claim token, ARGV[3] the attempt (JSON), ARGV[4] new state,
-- ARGV[5] next due (µs, '' none), ARGV[6] end time (µs, '' none), ARGV[7] attempts kept.
-- Returns 1 when recorded, 0 when the claim was lost.
local k, lk, due_set, done_set = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, token, attempt, state, due, ended, keep =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
if redis.call('HGET', k, 'c') ~= token then return 0 end
redis.call('HINCRBY', k, 'n', 1)
redis.call('HSET', k, 'st', state)
redis.call('HDEL', k, 'c', 'a')
redis.call('RPUSH', lk, attempt)
redis.call('LTRIM', lk, -keep, -1)
if due ~= '' then
  redis.call('ZADD', due_set, due, id)
  redis.call('HSET', k, 'due', due)
else
  redis.call('ZREM', due_set, id)
  redis.call('HDEL', k, 'due')
  redis.call('ZADD', done_set, ended, id)
end
return 1
