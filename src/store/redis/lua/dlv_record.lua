-- Records an attempt of a claimed webhook delivery (see src/store/redis/deliveries.rs), only
-- while the claim is still the caller's, in place of the claim's attempt started (field `a`).
--
-- KEYS[1] the delivery `P:dlv:{n}`, KEYS[2] its attempts `P:dlvlog:{n}`, KEYS[3] `P:dlv:pend`,
-- KEYS[4] `P:dlv:done`, KEYS[5] its endpoint's pending deliveries `P:dlv:ep:{endpoint id}`
-- (the SHA-1 hex of the URL up to its query: `endpoint_id` in src/store/redis/deliveries.rs),
-- KEYS[6] `P:dlv:eps`.
-- ARGV[1] delivery id, ARGV[2] claim token, ARGV[3] the attempt (JSON), ARGV[4] new state,
-- ARGV[5] next due (µs, '' none), ARGV[6] end time (µs, '' none), ARGV[7] attempts kept,
-- ARGV[8] the endpoint id (its member in `P:dlv:eps`), ARGV[9] now (µs, the store's clock, as
-- the claim's hold was set).
-- Returns the new state when recorded (ARGV[4]: the caller plans it at each try, from the
-- store's clock), '' when the claim was lost: taken by another claim, or its hold ran out
-- (the claim's `due`, its end, is not after now). A record made after its hold ran out is
-- refused even when no other claim took the delivery yet: its attempt shows as unknown (its
-- sender was paused past the hold), and the delivery is attempted again by the next claim, as
-- any other claim could have done meanwhile.
-- A key of the wrong type fails the record naming it, having written nothing (the claim then
-- passes the delivery: `dlv_claim.lua`).
local k, lk, pend, done_set, ek, eps = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, token, attempt, state, due, ended, keep, ep, now =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8], ARGV[9]
for i, want in ipairs({'hash', 'list', 'zset', 'zset', 'zset', 'zset'}) do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= want and t ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' is a ' .. t .. ', not a ' .. want)
  end
end
local f = redis.call('HMGET', k, 'c', 'due', 'n')
if f[1] ~= token then return '' end
-- The hold ran out (a claim always sets its end; one made by an older build may not).
if f[2] and tonumber(f[2]) and tonumber(f[2]) <= tonumber(now) then return '' end
if f[3] and not string.match(f[3], '^%d+$') then
  return redis.error_reply('field n of ' .. k .. ' is not a number')
end
redis.call('HINCRBY', k, 'n', 1)
redis.call('HSET', k, 'st', state)
redis.call('HDEL', k, 'c', 'a')
redis.call('RPUSH', lk, attempt)
redis.call('LTRIM', lk, -keep, -1)
if due ~= '' then
  redis.call('ZADD', pend, due, id)
  redis.call('ZADD', ek, due, id)
  redis.call('HSET', k, 'due', due)
else
  redis.call('ZREM', pend, id)
  redis.call('ZREM', ek, id)
  redis.call('HDEL', k, 'due')
  redis.call('ZADD', done_set, ended, id)
end
-- The endpoint's entry in `P:dlv:eps`: the due time of its first delivery, none without any.
local f = redis.call('ZRANGE', ek, 0, 0, 'WITHSCORES')
if f[1] then redis.call('ZADD', eps, f[2], ep) else redis.call('ZREM', eps, ep) end
return state
