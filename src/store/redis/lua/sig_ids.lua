-- Signal client ids (see src/store/redis/signals.rs), prepended to signal_append.lua,
-- signal_trim.lua and commit.lua: `P:sigidt:{key}` holds each id of `P:sigid:{key}` by its
-- record's time, so that an id goes with its record.

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

