-- One chunk of the finished jobs of a window, counted per minute, type and status (the
-- dashboard's last hour, src/store/redis/activity.rs). Read only; a chunk is at most `n` entries
-- of `P:fin` (plus the ones sharing the last entry's score), so Redis is never held for long.
--
-- KEYS[1] `P:fin` (finished jobs scored by finished_at, µs). The jobs' hashes are named by what
-- `P:fin` holds: ARGV[1] is the job key prefix `P:job:` (Redis Cluster: docs/redis.md, one hash
-- slot through the prefix's hash tag).
-- ARGV[2] the lowest score (inclusive, or `(score` exclusive), ARGV[3] the highest (inclusive),
-- ARGV[4] the chunk size, ARGV[5] the minute in µs.
-- Returns {next, key1, count1, key2, count2, ...}: `next` is the exclusive lower bound of the
-- next chunk ('' when this was the last), a key is `{minute}\n{type}\n{status}`.
local fin = KEYS[1]
local prefix, lo, hi, n, minute = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local got = redis.call('ZRANGEBYSCORE', fin, lo, hi, 'WITHSCORES', 'LIMIT', 0, n)
local ids, scores = {}, {}
for i = 1, #got, 2 do
  ids[#ids + 1] = got[i]
  scores[#scores + 1] = got[i + 1]
end
local next = ''
if #ids == n then
  -- Full: take every entry sharing the last score too (ties are ordered by member, and the ones
  -- already taken come first), so the next chunk can start strictly above it.
  local last = scores[#scores]
  local taken = 0
  for i = #scores, 1, -1 do
    if scores[i] == last then taken = taken + 1 else break end
  end
  local ties = redis.call('ZRANGEBYSCORE', fin, last, last)
  for i = taken + 1, #ties do
    ids[#ids + 1] = ties[i]
    scores[#scores + 1] = last
  end
  next = '(' .. last
end
local counts, order = {}, {}
local lastm, mstr = nil, ''
for i, id in ipairs(ids) do
  -- pcall: a job key of another type (a hand edit) is passed, not the whole count failed.
  local h = redis.pcall('HMGET', prefix .. id, 's', 't')
  local st, t = h[1], h[2]
  if st and not t then
    -- Written before jobs had `t`: the type from the record.
    local ok, j = pcall(cjson.decode, redis.call('HGET', prefix .. id, 'b') or '')
    if ok and type(j) == 'table' and type(j['type']) == 'string' then t = j['type'] end
  end
  if st and t then
    -- Scores come in order: the minute's text changes once a minute.
    local m = math.floor(tonumber(scores[i]) / minute)
    if m ~= lastm then lastm, mstr = m, string.format('%d', m) .. '\n' end
    local key = mstr .. t .. '\n' .. st
    if not counts[key] then
      counts[key] = 0
      order[#order + 1] = key
    end
    counts[key] = counts[key] + 1
  end
end
local out = { next }
for _, key in ipairs(order) do
  out[#out + 1] = key
  out[#out + 1] = counts[key]
end
return out
