-- Signal rules (see src/store/redis/signals.rs), prepended to signal_append.lua,
-- signal_trim.lua and commit.lua. Client ids: `P:sigidt:{key}` holds each id of `P:sigid:{key}`
-- by its record's time, so that an id goes with its record. Times: a key's records are stamped
-- in the order they are written. (Redis reports errors of those scripts with line numbers that
-- count this file's lines first.)

-- The time (µs, as text) of a new record of `sig` (`P:sig:{key}`) its writer took at `at`: one
-- microsecond after the key's newest record when `at` is not later (another node's clock, a
-- write that waited), so that a reader following `next_since` misses no record written later.
local function stamp(sig, at)
  local t = tonumber(at)
  local last = redis.call('ZRANGE', sig, -1, -1, 'WITHSCORES')[2]
  if last and tonumber(last) >= t then t = tonumber(last) + 1 end
  return string.format('%d', t)
end

-- Forgets the ids of records written before `cut` (µs): each only while it still names a record
-- of that time (a build before `P:sigidt` may have written it again since).
local function forget_ids_before(sid, sidt, cut)
  local gone = redis.call('ZRANGEBYSCORE', sidt, '-inf', '(' .. cut, 'WITHSCORES')
  for i = 1, #gone, 2 do
    local r = redis.call('HGET', sid, gone[i])
    if r and tonumber(string.match(r, ',"at":(%-?%d+),')) == tonumber(gone[i + 1]) then
      redis.call('HDEL', sid, gone[i])
    end
  end
  redis.call('ZREMRANGEBYSCORE', sidt, '-inf', '(' .. cut)
end

-- After the records of `sig` were cut by rank: the ids of records older than its oldest kept one
-- (an id written in the same microsecond as it stays, until retention).
local function forget_cut_ids(sig, sid, sidt)
  local oldest = redis.call('ZRANGE', sig, 0, 0, 'WITHSCORES')[2]
  if oldest then forget_ids_before(sid, sidt, oldest) end
end

