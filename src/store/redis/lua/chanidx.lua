-- The channel index (src/store/redis/chanidx.rs): `P:jch:{channel}` the jobs of a channel that
-- is not their own id (lex-ordered, score 0, as `P:all`), derived from the global event stream
-- `P:ev`, which every build appends to in commit order (a submit's event with the job in one
-- commit.lua call), so jobs written by builds that know nothing of the index are indexed too.
-- `P:jchidx` (hash) says how far: `state` (`ok`, or `rebuild` while one runs, `lost` when
-- events were trimmed before they were indexed; absent: never built), `at` the stream id up to
-- which every event was indexed and `n` its ordinal (the events ever added to the stream up to
-- and including `at`: trimming removes the oldest first and runyard never XDELs, so events were
-- lost before they were indexed iff more were removed, `entries-added - length`, than indexed,
-- `n`), `gen` the rebuild generation, `s0`/`n0` the stream's end when the running rebuild began.
--
-- KEYS[1] `P:ev`, KEYS[2] `P:jchidx`, KEYS[3] `P:all`, KEYS[4] `P:jchidx:lock`. The jobs' hashes
-- and the channels' sets are named by what the stream and `P:all` hold: ARGV[2] `P:job:`,
-- ARGV[3] `P:jch:` (Redis Cluster: one hash slot through the prefix's hash tag).
-- ARGV[1] the operation, then its own arguments:
--   `catchup` ARGV[4] events at most: indexes the events after `at`, also while a rebuild runs
--     (so that events arriving during its walk are not lost to trimming). Returns {state, events
--     indexed, 1 when the stream's end was reached}; state `ok` or `rebuild` (listings read the
--     index only when `ok`), or (nothing done) `off` while the index is not built or `lost`
--     (events trimmed before they were indexed: marked so).
--   `begin` ARGV[4] token, ARGV[5] lock ms: starts a rebuild when the index is not ok and no
--     other rebuild runs (the lock `SET NX PX`): state `rebuild`, a new generation, `at`/`n`
--     (and `s0`/`n0`) the stream's end now, from which the catch-up goes on during the walk.
--     Returns {'go', gen} or {'busy'}.
--   `walk` ARGV[4] token, ARGV[5] lock ms, ARGV[6] gen, ARGV[7] after (a job id, '' from the
--     oldest), ARGV[8] batch: indexes the next jobs of `P:all` (refreshing the lock). Returns
--     {'ok', last id read or '', count read} or {'stale'} (the lock or the generation is another's).
--   `prune` ARGV[4] a channel, ARGV[5..] job ids: takes those whose job no longer exists out
--     of the channel's set (a job deleted by an older build's retention, which leaves it there).
--     Returns {'ok'}.
--   `finish` ARGV[4] token, ARGV[5] gen, ARGV[6] backoff ms: state `ok` if the generation is
--     still this rebuild's and no catch-up found it `lost` (`at`/`n` stay where the catch-up
--     took them, at or after `s0`/`n0`); frees the lock, or, when `lost`, keeps it for the
--     backoff so that no node rebuilds again at once. Returns the state: `ok` when marked,
--     `lost`, or `stale` (another generation's).
-- Completeness: a job committed before `begin` is in `P:all` then (commit.lua adds it and
-- appends its event in one call), so the walk finds it; one committed after has its event
-- after `s0`, indexed by a catch-up from `at` = `s0` on; a catch-up that finds such an event
-- trimmed marks `lost`, and `finish` then does not mark `ok`.
local ev, idx, all, lock = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, job_p, jch_p = ARGV[1], ARGV[2], ARGV[3]

local function info()
  if redis.call('EXISTS', ev) == 0 then return nil end
  local r = redis.call('XINFO', 'STREAM', ev)
  local t = {}
  for i = 1, #r, 2 do t[r[i]] = r[i + 1] end
  return t
end

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end

-- The job and channel of an event (JSON written by serde in the fields' order, `{"id":"",
-- "channel_id":...,"job_id":...`; or the compact form of `store.records = "compact"`,
-- `{"c":channel,"j":job,...`, the job the channel's own when `j` is absent, see
-- src/store/event_record.rs): read with a pattern (a JSON string holds no unescaped quote, so
-- the first `","job_id":"` ends the channel), decoded in full when escaped or in another shape.
local function job_of(e)
  local c, j = string.match(e, '^{"id":"[^"\\]*","channel_id":"(.-)","job_id":"([^"\\]*)"')
  if c and not string.find(c, '\\', 1, true) then return j, c end
  c, j = string.match(e, '^{"c":"([^"\\]*)","j":"([^"\\]*)"')
  if c then return j, c end
  c = string.match(e, '^{"c":"([^"\\]*)"')
  if c and string.sub(e, #c + 8, #c + 12) ~= ',"j":' then return c, c end
  local ok, d = pcall(cjson.decode, e)
  if not ok or type(d) ~= 'table' then return nil, nil end
  if type(d.c) == 'string' then
    if type(d.j) == 'string' then return d.j, d.c end
    return d.c, d.c
  end
  if type(d.job_id) ~= 'string' then return nil, nil end
  -- Without its channel: the job's own says.
  if type(d.channel_id) ~= 'string' then return d.job_id, nil end
  return d.job_id, d.channel_id
end

-- The channel of job `id` (its hash's `c`), nil when it has none or its key is of another type
-- (a hand edit: no job's, and a rebuild or catch-up must not fail on it for good).
local function chan_of(id)
  local c = redis.pcall('HGET', job_p .. id, 'c')
  if type(c) == 'table' then return nil end
  return c
end

-- A job whose channel is not its own id, in its channel's set, if it (still) exists with it.
-- False when the event names no job (none is written so): the index cannot say what it missed.
local function add(id, c)
  if not id or id == '' then return false end
  if c ~= id then
    local stored = chan_of(id)
    if stored and stored ~= id and (c == nil or stored == c) then
      redis.call('ZADD', jch_p .. stored, 0, id)
    end
  end
  return true
end

if op == 'catchup' then
  local max = tonumber(ARGV[4])
  local h = redis.call('HMGET', idx, 'state', 'at', 'n')
  local state = h[1]
  if (state ~= 'ok' and state ~= 'rebuild') or not h[2] or not h[3] then
    return { 'off', 0, 0 }
  end
  local at, n = h[2], tonumber(h[3])
  local t = info()
  local added, len, last = 0, 0, '0-0'
  if t then
    added, len, last = tonumber(t['entries-added']), tonumber(t['length']), t['last-generated-id']
  end
  -- Events removed before they were indexed, or a stream deleted and made again (fewer added
  -- than indexed, or its end before `at`): the index may miss jobs.
  if added - len > n or added < n or less(last, at) then
    redis.call('HSET', idx, 'state', 'lost')
    return { 'lost', 0, 0 }
  end
  if added == n then return { state, 0, 1 } end
  local es = redis.call('XRANGE', ev, '(' .. at, '+', 'COUNT', max)
  -- Events after `at` counted but none there: `at` and `n` disagree; build again.
  if #es == 0 then
    redis.call('HSET', idx, 'state', 'lost')
    return { 'lost', 0, 0 }
  end
  for _, e in ipairs(es) do
    local f, named = e[2], false
    for i = 1, #f, 2 do
      if f[i] == 'e' then named = add(job_of(f[i + 1])) end
    end
    if not named then
      redis.call('HSET', idx, 'state', 'lost')
      return { 'lost', 0, 0 }
    end
  end
  redis.call('HSET', idx, 'at', es[#es][1], 'n', n + #es)
  local done = 0
  if n + #es >= added then done = 1 end
  return { state, #es, done }
elseif op == 'begin' then
  if redis.call('HGET', idx, 'state') == 'ok' then return { 'busy' } end
  if not redis.call('SET', lock, ARGV[4], 'NX', 'PX', ARGV[5]) then return { 'busy' } end
  local gen = redis.call('HINCRBY', idx, 'gen', 1)
  local t = info()
  local s0, n0 = '0-0', 0
  if t then s0, n0 = t['last-generated-id'], tonumber(t['entries-added']) end
  redis.call('HSET', idx, 'state', 'rebuild', 's0', s0, 'n0', n0, 'at', s0, 'n', n0)
  return { 'go', gen }
elseif op == 'walk' then
  if redis.call('GET', lock) ~= ARGV[4] or redis.call('HGET', idx, 'gen') ~= ARGV[6] then
    return { 'stale' }
  end
  redis.call('PEXPIRE', lock, ARGV[5])
  local from = '-'
  if ARGV[7] ~= '' then from = '(' .. ARGV[7] end
  local ids = redis.call('ZRANGE', all, from, '+', 'BYLEX', 'LIMIT', 0, tonumber(ARGV[8]))
  for _, id in ipairs(ids) do
    local c = chan_of(id)
    if c and c ~= id then redis.call('ZADD', jch_p .. c, 0, id) end
  end
  return { 'ok', ids[#ids] or '', #ids }
elseif op == 'prune' then
  local set = jch_p .. ARGV[4]
  for i = 5, #ARGV do
    if redis.call('EXISTS', job_p .. ARGV[i]) == 0 then redis.call('ZREM', set, ARGV[i]) end
  end
  return { 'ok' }
elseif op == 'finish' then
  local h = redis.call('HMGET', idx, 'gen', 'state')
  local state = 'stale'
  if h[1] == ARGV[5] and h[2] == 'rebuild' then
    redis.call('HSET', idx, 'state', 'ok')
    state = 'ok'
  elseif h[1] == ARGV[5] and h[2] == 'lost' then
    state = 'lost'
  end
  if redis.call('GET', lock) == ARGV[4] then
    if state == 'lost' then
      redis.call('PEXPIRE', lock, ARGV[6])
    else
      redis.call('DEL', lock)
    end
  end
  return state
end
return redis.error_reply('chanidx: unknown operation ' .. tostring(op))
