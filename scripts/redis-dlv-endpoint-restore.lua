-- Puts the pending webhook deliveries of one endpoint back in a new pending set of that
-- endpoint, after its set (`P:dlv:ep:{endpoint id}`) was found of the wrong type: the claims
-- took the endpoint out of `P:dlv:eps`, and its deliveries stayed pending in `P:dlv:pend`, not
-- attempted (docs/redis.md, "Other keys of the wrong type"). Delete (or rename) the damaged key
-- first, then, `P` being `store.prefix`, call it page by page until it answers a cursor of
-- `done` (each call reads at most COUNT pending deliveries, so Redis is never held long):
--
--   c='-inf'; while [ "$c" != done ]; do
--     c=$(redis-cli --eval scripts/redis-dlv-endpoint-restore.lua \
--       P:dlv:pend P:dlv:ep:{endpoint id} P:dlv:eps , {endpoint id} P:dlv: "$c" 1000 | head -1)
--   done
--
-- Each delivery in that page of `P:dlv:pend` (by due time, from the cursor on) whose URL (up to
-- its query) has that id goes back in the endpoint's set, due as it was, and the endpoint in
-- `P:dlv:eps`; the claims then attempt them as any others. Safe to run again, and on a live
-- system (a delivery attempted meanwhile has left `P:dlv:pend`; one put back twice is one
-- member; one may be missed when deliveries of the page's last due time leave meanwhile, or
-- one moves past the cursor while the pages run: run it again until it adds nothing).
-- Returns the next cursor (`done` at the end) and how many the endpoint's set holds.
local pend, ek, eps = KEYS[1], KEYS[2], KEYS[3]
local ep, dlv_prefix = ARGV[1], ARGV[2]
-- The cursor: `<due score>/<how many of that score were read>` (`-inf` to start).
local cursor, count = ARGV[3] or '-inf', tonumber(ARGV[4] or '1000')
if not count or count < 1 then return redis.error_reply('COUNT must be a whole number >= 1') end
local cs, co = string.match(cursor, '^([^/]+)/(%d+)$')
if not cs then cs, co = cursor, '0' end
co = tonumber(co)
for _, kt in ipairs({{ek, 'zset'}, {pend, 'zset'}, {eps, 'zset'}}) do
  local t = redis.call('TYPE', kt[1])['ok']
  if t ~= kt[2] and t ~= 'none' then
    return redis.error_reply(kt[1] .. ' is a ' .. t .. ': delete it first')
  end
end
local p = redis.call('ZRANGEBYSCORE', pend, cs, '+inf', 'WITHSCORES', 'LIMIT', co, count)
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
local next = 'done'
if #p == 2 * count then
  -- Past the page: its last score, skipping the members of that score already read.
  local last, same = p[#p], 0
  for i = #p, 2, -2 do
    if p[i] ~= last then break end
    same = same + 1
  end
  if last == cs then same = same + co end
  next = last .. '/' .. same
end
return {next, redis.call('ZCARD', ek)}
