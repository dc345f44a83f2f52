-- Commits job writes, each with a compare-and-set on the job's version, together with everything
-- that depends on the job: its index entries, its idempotency key, its file references and its
-- event (global stream + channel stream). The status rules ran in Rust (`crate::job::apply`);
-- this script only checks that nobody wrote the job in between. One call carries the writes of
-- several callers of one process (group commit, see `RedisStore::commit`): each write is checked
-- and applied on its own, in order, and gets its own reply.
--
-- A job that becomes QUEUED is announced on the notice channel from here (one message per runner
-- per call), so idle workers of every process wake without another round trip.
--
-- Every key the script touches is declared in KEYS (as Redis Cluster needs), computed in Rust
-- (`Write::keys` in src/store/redis/commit.rs), except one: a webhook delivery's hash
-- `P:dlv:<n>`, whose number comes from `INCR P:dlv:seq` in this same script (ARGV[6] is its
-- prefix `P:dlv:`).
--
-- KEYS[1..14], shared by every write of the call: `P:all`, `P:jc` (job counts, see counts.lua),
--   `P:lease`, `P:fin`, `P:sched`, `P:fhashes`, `P:waitdl`, `P:waitdue`, `P:waitgen`, `P:sigseq`,
--   `P:sigkeys`, `P:dlv:seq`, `P:dlv:due`, `P:ev`;
-- then per write, in the order of the writes: 8 keys `P:job:{id}`, `P:idem:{key}` (the job's
--   key when none), `P:st:{old status}` (the job's key for a submit), `P:st:{new status}`,
--   `P:qt:{type}` (the QUEUED jobs of a type), `P:q:{runner}`, `P:evc:{channel}`,
--   `P:dlv:job:{id}`; then `P:fref:{hash}` per file hash of the file-hashes value (in its order),
--   `P:waitk:{key}` per waited key (the count is the write's value `nwait`), and per signal key of
--   `emits` (in its order) `P:sig:{key}`, `P:sigid:{key}`, `P:waitk:{key}`.
--
-- ARGV, named (see the locals below): global stream limit, channel stream limit, channel stream
-- TTL (ms), number of writes, the committing process's notice origin, the delivery hash prefix,
-- the notice channel; then 19 values per write, in the order of the `local` in `commit_one`:
--   id, expected version ('' = the job must not exist: a submit), new version, status, runner,
--   channel, queued_at, run_at ('' none), lease expiry ('' none, '=' unchanged: the job was
--   active with this same expiry at the expected version), finished_at ('' none),
--   idempotency key ('' none), file hashes (space separated, '' none), body (JSON),
--   event (JSON, '' none), signal keys to write if this write makes the job SUCCESS (`emits`,
--   separated by newlines, '' none; see signal_append.lua for the keys they touch),
--   job type (the job counts, see counts.lua: `P:jc` counters by type and status, `P:qt:{type}`
--   the QUEUED jobs of a type by queued_at),
--   webhook delivery of the event ('' none, else "<created_at µs>\n<url>"; see deliveries.rs),
--   nwait (the `P:waitk:{key}` keys declared for the job's wait: its keys when it starts or stops
--   waiting, else 0), wait deadline (µs, '' none)
-- Returns one reply per job:
--   'OK:<event id>' (event id empty without event), 'CONFLICT' (version changed: reload and
--   apply again), 'GONE' (the job no longer exists), 'EXISTS' (a submit whose id is already
--   stored: a retried submit), 'IDEM:<job id>' (a submit whose idempotency key is taken).
local ALL, JC, LEASE, FIN, SCHED, FHASHES, WAITDL, WAITDUE, WAITGEN, SIGSEQ, SIGKEYS, DLVSEQ,
  DLVDUE, EV = unpack(KEYS, 1, 14)
local FIXED_KEYS, WRITE_KEYS, WRITE_ARGS, HEAD_ARGS = 14, 8, 19, 7
local glimit = tonumber(ARGV[1])
local climit = tonumber(ARGV[2])
local cttl = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local origin = ARGV[5]
local dlv_prefix = ARGV[6]
local notices = ARGV[7]
local announced = {}

local ACTIVE = { STARTING = true, RUNNING = true }
local TERMINAL = { SUCCESS = true, ERROR = true, TIMEOUT = true, CANCELLED = true }

-- `MAXLEN ~` trims whole stream nodes (100 entries by default), so it cannot keep a smaller
-- stream bounded: small limits are exact.
local function xadd(key, limit, id, ev)
  if limit < 100 then
    return redis.call('XADD', key, 'MAXLEN', limit, id, 'e', ev)
  end
  return redis.call('XADD', key, 'MAXLEN', '~', limit, id, 'e', ev)
end

-- Waiting jobs (see src/store/redis/waits.rs): `P:waitk:{key}` the jobs waiting on a signal
-- key, `P:waitdl` WAITING jobs by deadline, `P:waitdue` jobs to check (score: a generation from
-- `P:waitgen`, so a check only clears the mark it saw). A job that starts waiting is indexed and
-- marked (its signals may already be there); one that stops waiting leaves the indexes; a signal
-- marks the jobs waiting on its key. Marks are announced once per call on the notice channel (as
-- a WAITING change of the nil job, from no origin: every process, this one too, checks them).
local marked = false

local function mark_due(id)
  local g = redis.call('INCR', WAITGEN)
  redis.call('ZADD', WAITDUE, g, id)
  marked = true
end

-- KEYS[w + 1 .. w + nw] the keys `P:waitk:{key}` of the job's wait (see the KEYS above).
local function wait_enter(id, w, nw, deadline)
  for k = w + 1, w + nw do redis.call('SADD', KEYS[k], id) end
  if deadline ~= '' then redis.call('ZADD', WAITDL, deadline, id) end
  mark_due(id)
end

local function wait_leave(id, w, nw)
  for k = w + 1, w + nw do redis.call('SREM', KEYS[k], id) end
  redis.call('ZREM', WAITDL, id)
  redis.call('ZREM', WAITDUE, id)
end

-- A job's `emits` when it becomes SUCCESS: one signal per key, id `job:{id}` (so a key already
-- signalled by this job is not signalled twice), written with the job. From KEYS[e + 1] on, the
-- keys of each signal key: `P:sig:{key}`, `P:sigid:{key}`, `P:waitk:{key}`.
local function emit(id, keys, e, at)
  local i = 0
  for skey in string.gmatch(keys, '[^\n]+') do
    i = i + 1
    local sig, sid, wk = KEYS[e + 3 * i - 2], KEYS[e + 3 * i - 1], KEYS[e + 3 * i]
    local cid = 'job:' .. id
    if not redis.call('HGET', sid, cid) then
      local seq = redis.call('HINCRBY', SIGSEQ, skey, 1)
      local rec = '{"key":' .. cjson.encode(skey) .. ',"seq":' .. seq .. ',"at":' .. at ..
        ',"id":' .. cjson.encode(cid) .. ',"payload":{"job_id":' .. cjson.encode(id) .. '}}'
      redis.call('ZADD', sig, at, rec)
      redis.call('HSET', sid, cid, rec)
      if redis.call('ZCARD', sig) > 10000 then redis.call('ZREMRANGEBYRANK', sig, 0, -10001) end
      redis.call('ZADD', SIGKEYS, at, skey)
      for _, wid in ipairs(redis.call('SMEMBERS', wk)) do mark_due(wid) end
    end
  end
end

-- A webhook delivery of event `eid` (signed webhooks out, src/store/redis/deliveries.rs): a hash
-- per delivery, due at once; `djob` is `P:dlv:job:{id}`.
local function deliver(id, djob, eid, ev, dlv)
  local at, url = string.match(dlv, '^(%d+)\n(.+)$')
  if not at then return end
  local n = redis.call('INCR', DLVSEQ)
  redis.call('HSET', dlv_prefix .. n, 'j', id, 'u', url, 'e', eid, 'b', ev, 't', at,
    'st', 'pending', 'n', 0)
  redis.call('ZADD', DLVDUE, at, n)
  redis.call('ZADD', djob, n, n)
end

local function count(str, pattern)
  local c = 0
  for _ in string.gmatch(str, pattern) do c = c + 1 end
  return c
end

-- The write whose values start after ARGV[i] and whose keys start after KEYS[kb] (no table per
-- write: this runs for every change of every job).
local function commit_one(i, kb)
  local id, expv, newv, st, runner, chan, qat, runat, lease, fin, idem, files, body, ev, emits, jt,
    dlv, nwait, deadline = unpack(ARGV, i + 1, i + WRITE_ARGS)
  local key, idemk, oldk, stk, qtk, qk, ck, djob = unpack(KEYS, kb + 1, kb + WRITE_KEYS)
  local fk = kb + WRITE_KEYS -- file references from KEYS[fk + 1]
  local nf = count(files, '%S+')
  local wk, nw = fk + nf, tonumber(nwait) -- waited keys from KEYS[wk + 1]
  local ek = wk + nw -- signal keys from KEYS[ek + 1]
  local cur = redis.call('HMGET', key, 'v', 's')
  local old = cur[2]
  if expv == '' then
    if cur[1] then return 'EXISTS' end
    if idem ~= '' then
      local other = redis.call('GET', idemk)
      if other then return 'IDEM:' .. other end
      redis.call('SET', idemk, id)
    end
    redis.call('ZADD', ALL, 0, id)
    old = false
  else
    if not cur[1] then return 'GONE' end
    if cur[1] ~= expv then return 'CONFLICT' end
  end
  redis.call('HSET', key, 'v', newv, 's', st, 'r', runner, 'q', qat, 'c', chan, 'b', body, 't', jt)
  -- Job counts (metrics): one counter per (type, status), and the type's queue by queued_at.
  if old ~= st then
    if old then
      local f = jt .. '\n' .. old
      if redis.call('HINCRBY', JC, f, -1) <= 0 then redis.call('HDEL', JC, f) end
    end
    redis.call('HINCRBY', JC, jt .. '\n' .. st, 1)
  end
  if st == 'QUEUED' then
    redis.call('ZADD', qtk, qat, id)
  elseif old == 'QUEUED' then
    redis.call('ZREM', qtk, id)
  end
  if idem ~= '' then redis.call('HSET', key, 'k', idem) end
  if files ~= '' then
    redis.call('HSET', key, 'f', files)
    local c = fk
    for h in string.gmatch(files, '%S+') do
      c = c + 1
      redis.call('SADD', KEYS[c], id)
      redis.call('SADD', FHASHES, h)
    end
  end
  -- Index entries follow the status. STARTING and RUNNING have none: those jobs are listed from
  -- the lease set, which holds every active job.
  if old ~= st then
    if old and not ACTIVE[old] then redis.call('ZREM', oldk, id) end
    if not ACTIVE[st] then redis.call('ZADD', stk, 0, id) end
  end
  if st == 'QUEUED' then
    redis.call('ZADD', qk, qat, id)
    if old ~= 'QUEUED' and not announced[runner] then
      announced[runner] = true
      redis.call('PUBLISH', notices, origin .. '\nQ ' .. runner)
    end
  elseif old == 'QUEUED' then
    redis.call('ZREM', qk, id)
  end
  if st == 'SCHEDULED' and runat ~= '' then
    redis.call('ZADD', SCHED, runat, id)
  elseif old == 'SCHEDULED' then
    redis.call('ZREM', SCHED, id)
  end
  -- Removing a non-active job also drops a claim reservation (see claim.lua).
  if ACTIVE[st] and lease == '=' then
    -- Unchanged (active before and after, same expiry): the entry is already there.
  elseif ACTIVE[st] and lease ~= '' then
    redis.call('ZADD', LEASE, lease, id)
  elseif old then
    redis.call('ZREM', LEASE, id)
  end
  if fin ~= '' then
    redis.call('ZADD', FIN, fin, id)
  elseif old and TERMINAL[old] then
    redis.call('ZREM', FIN, id)
  end
  if st == 'WAITING' and old ~= 'WAITING' then
    wait_enter(id, wk, nw, deadline)
  elseif old == 'WAITING' and st ~= 'WAITING' then
    wait_leave(id, wk, nw)
  end
  if st == 'SUCCESS' and old ~= 'SUCCESS' and emits ~= '' and fin ~= '' then
    emit(id, emits, ek, fin)
  end
  local eid = ''
  if ev ~= '' then
    eid = xadd(EV, glimit, '*', ev)
    -- Same id in the channel stream: channel ids are a subsequence of the global ones, so they
    -- increase too, and a client may use one id in both.
    xadd(ck, climit, eid, ev)
    redis.call('PEXPIRE', ck, cttl)
    if dlv ~= '' then deliver(id, djob, eid, ev, dlv) end
  end
  return 'OK:' .. eid
end

-- Where every write's keys start, checked first: a call whose KEYS do not match its writes
-- changes nothing.
local bases = {}
local kc = FIXED_KEYS
for j = 1, n do
  local i = HEAD_ARGS + (j - 1) * WRITE_ARGS
  bases[j] = kc
  kc = kc + WRITE_KEYS + count(ARGV[i + 12], '%S+') + tonumber(ARGV[i + 18]) +
    3 * count(ARGV[i + 15], '[^\n]+')
end
if kc ~= #KEYS then
  return redis.error_reply('commit: ' .. #KEYS .. ' keys declared, ' .. kc .. ' expected')
end
local out = {}
for j = 1, n do out[j] = commit_one(HEAD_ARGS + (j - 1) * WRITE_ARGS, bases[j]) end
if marked then
  redis.call('PUBLISH', notices, '\nC 00000000-0000-0000-0000-000000000000 WAITING')
end
return out
