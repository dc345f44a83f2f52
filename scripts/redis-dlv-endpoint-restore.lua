-- Puts the pending webhook deliveries of one endpoint back in a new pending set of that
-- endpoint, after its set (`P:dlv:ep:{endpoint id}`) was found of the wrong type: the claims
-- took the endpoint out of `P:dlv:eps`, and its deliveries stayed pending in `P:dlv:pend`, not
-- attempted (docs/redis.md, "Other keys of the wrong type"). Delete (or rename) the damaged key
-- first, then, `P` being `store.prefix`:
--
--   redis-cli --eval scripts/redis-dlv-endpoint-restore.lua \
--     P:dlv:pend P:dlv:ep:{endpoint id} P:dlv:eps , {endpoint id} P:dlv:
--
-- Each delivery in `P:dlv:pend` whose URL (up to its query) has that id goes back in the
-- endpoint's set, due as it was, and the endpoint in `P:dlv:eps`; the claims then attempt them
-- as any others. Reads every pending delivery's hash once (a one-off). Returns how many the
-- endpoint's set holds.
local pend, ek, eps = KEYS[1], KEYS[2], KEYS[3]
local ep, dlv_prefix = ARGV[1], ARGV[2]
local t = redis.call('TYPE', ek)['ok']
if t ~= 'zset' and t ~= 'none' then
  return redis.error_reply(ek .. ' is a ' .. t .. ': delete it first')
end
local p = redis.call('ZRANGE', pend, 0, -1, 'WITHSCORES')
for i = 1, #p, 2 do
  local k = dlv_prefix .. p[i]
  if redis.call('TYPE', k)['ok'] == 'hash' then
    local u = redis.call('HGET', k, 'u')
    if u and redis.sha1hex(string.match(u, '^[^?]*')) == ep then
      redis.call('ZADD', ek, p[i + 1], p[i])
    end
  end
end
local f = redis.call('ZRANGE', ek, 0, 0, 'WITHSCORES')
if f[1] then redis.call('ZADD', eps, f[2], ep) end
return redis.call('ZCARD', ek)
