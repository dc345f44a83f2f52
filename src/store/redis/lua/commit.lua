-- Commits job writes, each with a compare-and-set on the job's version, together with everything
-- that depends on the job: its index entries, its idempotency key, its file references and its
-- event (global stream + the channel's stream or list). The status rules ran in Rust (`crate::job::apply`), and
-- so did the choice of what each write touches (`Write::parts` in src/store/redis/write.rs):
-- this script checks that nobody wrote the job in between, then does what the write declares and
-- nothing else (an index entry, a counter, an event, only when the write names its key). One call
-- carries the writes of several callers of one process (group commit, see `RedisStore::commit`):
-- each write is checked and applied on its own, in order, and gets its own reply.
--
-- The call's notices go out from here, in one message on the notice channel (see
-- src/store/redis/notices.rs): a runner that got a new QUEUED job (`Q`), so idle workers of every
-- process wake, and `E` when the call appended events and some process reads events (`P:evwant`
-- exists: set by the readers, see src/store/redis/events.rs; long polls of the other processes
-- wake), without another round trip. A call with nothing to announce publishes nothing.
--
-- Every key the script touches comes through KEYS (as Redis Cluster needs), except a webhook
-- delivery's hash, whose number comes from `INCR P:dlv:seq` here: it is built from the delivery
-- prefix `P:dlv:` (argument `dlvp`); and a hand-over list, named by the parked process found here:
-- built from `P:hand:` (argument `handp`).
--
-- ARGV is name/value pairs (names below). First the call's own:
--   `shared` the names of the keys shared by the call's writes, declared first in KEYS in that
--     order (space separated, any of: all jc lease fin sched fhashes waitdl waitdue waitgen
--     sigseq sigkeys dlvseq dlvpend dlveps ev evwant evlsince, for `P:all`, `P:jc`, `P:lease`,
--     `P:fin`, `P:sched`, `P:fhashes`, `P:waitdl`, `P:waitdue`, `P:waitgen`, `P:sigseq`,
--     `P:sigkeys`, `P:dlv:seq`, `P:dlv:pend`, `P:dlv:eps`, `P:ev`, `P:evwant`, `P:evlsince`),
--   `glimit`, `climit` the global stream and channel limits, `cttl` the channel's TTL (ms),
--   `cmin` (ms, lists only; absent: every event refreshes) the least PTTL a channel list may be
--   left with by a write that skips the refresh (see `chan_ttl`),
--   `origin` the committing process's notice origin, `notices` the notice channel, `dlvp` the
--   delivery prefix (only when a write has a delivery), `handp` the hand-over list prefix
--   `P:hand:` (sent by every call of a process with the hand-over on).
-- Then per write, starting with `id`: the write's values (absent = none)
--   `id`, `v` expected version (absent: the job must not exist, a submit), `nv` new version,
--   `st` status, `r` runner, `c` channel, `q` queued_at, `t` job type, `b` the job record (its JSON or
--   the compact form, `store.records`),
--   `runat`, `lease` expiry (µs), `fin` finished_at, `idem` idempotency key (submits),
--   `files` file hashes (space separated), `fgone` the hashes of files the job no longer holds
--   (a new attempt dropped the last one's uploads), `event` (its JSON or compact form), `wait` (`enter` or `leave`: the job
--   starts or stops waiting), `dl` wait deadline (µs), `emits` signal keys to write (separated by
--   newlines; see signal_append.lua for what they touch), `dlv` webhook delivery of the event
--   (`<created_at µs>\n<url>`, see deliveries.rs), `event0` and `dlv0` an event (and its
--   delivery) appended right before `event`: the write is two changes of the job in one (an
--   attempt's start and its finish, see src/store/redis/start.rs: the job goes from the stored
--   status to `st` at once, each change keeps its event), `ttl` (1: refresh the channel's TTL:
--   see `chan_ttl`), and `keys`, the names of the keys the write touches, in order (space
--   separated). A
--   name of a shared key refers to the call's declaration; any other takes the next KEYS entry:
--   `job` `P:job:{id}` (always first), `idem` `P:idem:{key}`, `stold` `P:st:{old status}`, `stnew`
--   `P:st:{new status}`, `qt` `P:qt:{type}`, `q` `P:q:{runner}`, `qold` `P:q:{runner it had}` (a
--   QUEUED job moved to another runner: its entry there goes), `evl` `P:evl:{channel}`, `evc`
--   `P:evc:{channel}`, `djob`
--   `P:dlv:job:{id}`, `dlvep` `P:dlv:ep:{endpoint id}` (with a delivery: the SHA-1 hex of its URL
--   up to the query), `park` `P:park:{runner}`, `parkn` `P:parkn:{runner}`, `tok` `P:token`
--   (a write that may be handed over, see `hand`), and per item `fref` `P:fref:{hash}` (per file hash),
--   `fgone` `P:fref:{hash}` (per hash of `fgone`), `waitk`
--   `P:waitk:{key}` (per waited key), `sig` `P:sig:{key}`, `sigid` `P:sigid:{key}`, `sigidt`
--   `P:sigidt:{key}`, `sigw` `P:waitk:{key}` (per emitted signal key, in the order of `emits`).
-- What a declared key means:
--   all: ZADD (a submit); idem: the submit's key is checked and set; jc: the job counts move
--   from the stored status to `st` (see counts.lua); stold / stnew: the status index entries
--   left / entered; qt, q: the job is in the type's / runner's queue iff QUEUED (a new QUEUED
--   job is announced); sched: in it iff SCHEDULED with `runat`; lease: in it iff `lease`;
--   fin: in it iff `fin`; fhashes, fref: the file references are added (fgone: removed,
--   and a hash no job refers to any more leaves fhashes); waitk, waitdl, waitdue,
--   waitgen: see `wait`; ev: the events are appended; the channel's (`store.channel_events`):
--   with `evl` (lists), the events are pushed to the list, `evc` (declared only with `ttl`)
--   has its TTL refreshed with the list's (a no-op when it does not exist), and a push that
--   creates the list sets `evlsince` if it is not set (see events.lua); without `evl`
--   (streams), the events are appended to the stream `evc` as builds before the list did (the
--   global id, `climit`, PEXPIRE with `ttl`), and no list is touched; evwant: whether `E` is
--   announced.
-- Returns one reply per job:
--   'OK:<event id>' (the id of the write's last event, empty without event; 'OKH:<event id>'
--   when the job was handed over to a parked worker, see `hand`), 'CONFLICT'
--   (version changed: reload and apply again), 'GONE' (the job no longer exists), 'EXISTS' (a
--   submit whose id is already stored: a retried submit), 'IDEM:<job id>' (a submit whose
--   idempotency key is taken), 'ERR:<error>' (a key of the write of the wrong type, or the job's
--   `v` not a number: nothing of it was written), 'PART:<error>' (a key of the wrong type met after the job's hash and index
--   entries were written: the job is stored, what that key was for is missing, e.g. its event in
--   the channel's stream).
local SHARED = {
  all = true, jc = true, lease = true, fin = true, sched = true, fhashes = true, waitdl = true,
  waitdue = true, waitgen = true, sigseq = true, sigkeys = true, dlvseq = true, dlvpend = true,
  dlveps = true, ev = true, evwant = true, evlsince = true,
}
local LISTS = {
  fref = true, fgone = true, waitk = true, sig = true, sigid = true, sigidt = true, sigw = true,
}

-- The call's values (H) and its writes (W), read from the name/value pairs.
local H, W = {}, {}
do
  local w
  for i = 1, #ARGV, 2 do
    local k, v = ARGV[i], ARGV[i + 1]
    if k == 'id' then
      w = { id = v }
      W[#W + 1] = w
    elseif w then
      w[k] = v
    else
      H[k] = v
    end
  end
end

-- The keys: the shared ones first, then each write's own, checked before anything is written
-- (a call whose KEYS do not match its names changes nothing).
local S, slot = {}, 0
for name in string.gmatch(H.shared or '', '%S+') do
  slot = slot + 1
  S[name] = KEYS[slot]
end
for _, w in ipairs(W) do
  local K = {}
  for name in string.gmatch(w.keys or '', '%S+') do
    if SHARED[name] then
      if not S[name] then return redis.error_reply('commit: shared key ' .. name .. ' not declared') end
      K[name] = S[name]
    else
      slot = slot + 1
      if LISTS[name] then
        local l = K[name]
        if not l then
          l = {}
          K[name] = l
        end
        l[#l + 1] = KEYS[slot]
      else
        K[name] = KEYS[slot]
      end
    end
  end
  if not K.job then return redis.error_reply('commit: a write without its job key') end
  w.K = K
end
if slot ~= #KEYS then
  return redis.error_reply('commit: ' .. #KEYS .. ' keys declared, ' .. slot .. ' named')
end

local glimit, climit, cttl = tonumber(H.glimit), tonumber(H.climit), tonumber(H.cttl)
local cmin = tonumber(H.cmin)
local announced, notice, evented = {}, H.origin, false

-- A write's channel stream or list (`evc`, `evl`) of another type (an operator's mistake,
-- another program sharing the Redis) fails that write before it writes anything: checked
-- once per call and key (`TYPE`, no round trip). It once failed the whole call after the writes
-- before it were made, and every caller of the call was told that nothing was stored.
local typed = {}
local function wrong_type(key, want)
  if not key or typed[key] then return nil end
  local t = redis.call('TYPE', key)['ok']
  if t ~= want and t ~= 'none' then return 'WRONGTYPE ' .. key .. ' is a ' .. t end
  typed[key] = true
  return nil
end

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

local function mark_due(K, id)
  local g = redis.call('INCR', K.waitgen)
  redis.call('ZADD', K.waitdue, g, id)
  marked = true
end

local function wait_move(w, K)
  if w.wait == 'enter' then
    for _, k in ipairs(K.waitk or {}) do redis.call('SADD', k, w.id) end
    if w.dl then redis.call('ZADD', K.waitdl, w.dl, w.id) end
    mark_due(K, w.id)
  elseif w.wait == 'leave' then
    for _, k in ipairs(K.waitk or {}) do redis.call('SREM', k, w.id) end
    redis.call('ZREM', K.waitdl, w.id)
    redis.call('ZREM', K.waitdue, w.id)
  end
end

-- A job's `emits` when it becomes SUCCESS: one signal per key, id `job:{id}` (so a key already
-- signalled by this job is not signalled twice), written with the job. The `job:` ids are
-- reserved (`EMIT_ID_PREFIX` in src/store/signals.rs): the API and the hook refuse them.
local function emit(w, K)
  local i, id = 0, w.id
  for skey in string.gmatch(w.emits, '[^\n]+') do
    i = i + 1
    local sig, sid, wk = K.sig[i], K.sigid[i], K.sigw[i]
    local sidt = (K.sigidt or {})[i]
    local cid = 'job:' .. id
    if not redis.call('HGET', sid, cid) then
      local at = stamp(sig, w.fin)
      local seq = redis.call('HINCRBY', K.sigseq, skey, 1)
      local rec = '{"key":' .. cjson.encode(skey) .. ',"seq":' .. seq .. ',"at":' .. at ..
        ',"id":' .. cjson.encode(cid) .. ',"payload":{"job_id":' .. cjson.encode(id) .. '}}'
      redis.call('ZADD', sig, at, rec)
      redis.call('HSET', sid, cid, rec)
      if sidt then redis.call('ZADD', sidt, at, cid) end
      if redis.call('ZCARD', sig) > 10000 then
        redis.call('ZREMRANGEBYRANK', sig, 0, -10001)
        if sidt then forget_cut_ids(sig, sid, sidt) end
      end
      redis.call('ZADD', K.sigkeys, at, skey)
      for _, wid in ipairs(redis.call('SMEMBERS', wk)) do mark_due(K, wid) end
    end
  end
end

-- A webhook delivery of event `eid` (signed webhooks out, src/store/redis/deliveries.rs): a hash
-- per delivery, due at once: pending (`dlvpend`), in its endpoint's pending set (`dlvep`), and
-- the endpoint's entry in `dlveps` moved to it when it is the endpoint's first due. The endpoint
-- is named by its id, the SHA-1 hex of the URL up to the query (`endpoint_id` in
-- src/store/redis/deliveries.rs): its path may be the webhook's secret, kept out of key names.
local function deliver(w, K, eid, ev, dlv)
  local at, url = string.match(dlv, '^(%d+)\n(.+)$')
  if not at then return end
  local n = redis.call('INCR', K.dlvseq)
  redis.call('HSET', H.dlvp .. n, 'j', w.id, 'u', url, 'e', eid, 'b', ev, 't', at,
    'st', 'pending', 'n', 0)
  redis.call('ZADD', K.dlvpend, at, n)
  redis.call('ZADD', K.dlvep, at, n)
  local ep = redis.sha1hex(string.match(url, '^[^?]*'))
  local first = redis.call('ZSCORE', K.dlveps, ep)
  if not first or tonumber(at) < tonumber(first) then redis.call('ZADD', K.dlveps, at, ep) end
  redis.call('ZADD', K.djob, n, n)
end

-- The call's index changes, netted: the job counts by (type, status) summed per field, and the
-- sorted-set entries (`all`, `qt`, `q`, `stold`/`stnew`, `sched`, `lease`, `fin`) kept as the
-- last state each write left per key and member; both are applied once, at the end of the call,
-- with one HINCRBY per field that moved and one variadic ZREM/ZADD per key. A group commit's
-- writes (and a batch submit's) share most of these keys: a claim's -1 QUEUED and a submit's +1
-- cancel out (a start with its finish is one write, `event0`: STARTING to the end at once,
-- RUNNING never counted). Nothing in the script reads these keys, so applying them at the end
-- changes no reply (also when a command fails mid-call: see the end).
local JC, JCF = {}, {}
local Z, ZK = {}, {}

local function count(field, d)
  local c = JC[field]
  if not c then JCF[#JCF + 1] = field end
  JC[field] = (c or 0) + d
end

-- `score` false: not in the set.
local function zset(key, id, score)
  local t = Z[key]
  if not t then
    t = {}
    Z[key] = t
    ZK[#ZK + 1] = key
  end
  t[id] = score
end

-- At most this many arguments per unpack (Lua's C stack).
local CHUNK = 4000

local function zcall(cmd, key, args)
  for i = 1, #args, CHUNK do
    redis.call(cmd, key, unpack(args, i, math.min(i + CHUNK - 1, #args)))
  end
end

-- The counts, each through `pcall`: `P:jc` is shared by every job, and of the wrong type (a hand
-- edit, another program sharing the Redis) it would fail every commit after its jobs' hashes were
-- written, out of every index. It is passed, logged once per call; the next read of the counts
-- rebuilds them from the jobs (src/store/redis/counts.rs). A field that fails alone (not a
-- number: a hand edit) is passed and the others are kept.
local function flush_counts()
  for _, field in ipairs(JCF) do
    local d = JC[field]
    if d ~= 0 then
      local r = redis.pcall('HINCRBY', S.jc, field, d)
      if type(r) == 'table' and r.err then
        redis.log(redis.LOG_WARNING, 'runyard: job count not kept (' .. S.jc .. '): ' .. r.err)
        if string.match(r.err, '^WRONGTYPE') then return end
      end
    end
  end
end

local function flush_index()
  flush_counts()
  for _, key in ipairs(ZK) do
    local add, rem = {}, {}
    for id, score in pairs(Z[key]) do
      if score then
        add[#add + 1] = score
        add[#add + 1] = id
      else
        rem[#rem + 1] = id
      end
    end
    if #rem > 0 then zcall('ZREM', key, rem) end
    if #add > 0 then zcall('ZADD', key, add) end
  end
end

-- The runner queues a job went into in this call: no job of theirs is handed over after it.
local queued_here = {}

-- Hand-over at submit (src/store/redis/handover.rs): a job that becomes QUEUED, declared with
-- `park` (`P:park:{runner}`, the parks by expiry, µs), `parkn` (`P:parkn:{runner}`, the places
-- left per park), `tok` (`P:token`) and the shared `lease`, goes to a parked worker instead of
-- its runner's queue when nothing older of the runner is QUEUED (in Redis, or queued earlier in
-- this call). One place of a live park is taken (the live parks in turn); the job gets a
-- fencing token and a claim reservation in the lease set (as claim.lua's picks: the reaper puts
-- it back in its queue if the worker never claims it); `<park id>|<token>|<record>` is pushed
-- to the parked process's list `P:hand:{origin}` (prefix `handp`), where it waits in a blocking
-- pop. Nothing is announced. A park member is `<origin>|<park id>|<lease µs>`. Returns the
-- reservation's expiry, or false (queued as before).
local function hand(w, K)
  if queued_here[K.q] or redis.call('ZCARD', K.q) > 0 or redis.call('ZCARD', K.park) == 0 then
    return false
  end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  -- The live parks in turn (the token counter is the turn), so that every parked process takes
  -- its share, not the oldest park all of them.
  local live = redis.call('ZCOUNT', K.park, now, '+inf')
  local tok = redis.call('INCR', K.tok)
  local m = live > 0 and redis.call('ZRANGEBYSCORE', K.park, now, '+inf', 'LIMIT', tok % live, 1)[1]
  if not m then
    -- Every park expired (their processes died): out, with their places.
    local gone = redis.call('ZRANGEBYSCORE', K.park, '-inf', now)
    for i = 1, #gone, CHUNK do
      local part = { unpack(gone, i, math.min(i + CHUNK - 1, #gone)) }
      redis.call('ZREM', K.park, unpack(part))
      redis.call('HDEL', K.parkn, unpack(part))
    end
    return false
  end
  local origin, pid, ttl = string.match(m, '^(.*)|(%d+)|(%d+)$')
  if not origin or redis.call('HINCRBY', K.parkn, m, -1) <= 0 then
    redis.call('ZREM', K.park, m)
    redis.call('HDEL', K.parkn, m)
    if not origin then return false end
  end
  redis.call('RPUSH', H.handp .. origin, pid .. '|' .. tok .. '|' .. w.b)
  return now + tonumber(ttl)
end

-- The job's index entries, as the write declares them.
local function index(w, K, old)
  local id, st = w.id, w.st
  if K.jc and old ~= st then
    if old then count(w.t .. '\n' .. old, -1) end
    count(w.t .. '\n' .. st, 1)
  end
  if K.qt then
    if st == 'QUEUED' then zset(K.qt, id, w.q) else zset(K.qt, id, false) end
  end
  if K.qold then zset(K.qold, id, false) end
  if K.stold then zset(K.stold, id, false) end
  if K.stnew then zset(K.stnew, id, 0) end
  if K.q then
    if st == 'QUEUED' and old ~= 'QUEUED' and K.park then
      -- A command of the hand-over that fails (a key of the wrong type) queues the job instead:
      -- its hash is written already, and a job written is never left out of every index.
      local ok, r = pcall(hand, w, K)
      if not ok then redis.log(redis.LOG_WARNING, 'runyard hand-over failed: ' .. tostring(r)) end
      w.handed = ok and r
    end
    if w.handed then
      zset(K.q, id, false)
    elseif st == 'QUEUED' then
      zset(K.q, id, w.q)
      queued_here[K.q] = true
      if old ~= 'QUEUED' and not announced[w.r] then
        announced[w.r] = true
        notice = notice .. '\nQ ' .. w.r
      end
    else
      zset(K.q, id, false)
    end
  end
  if K.sched then
    if st == 'SCHEDULED' and w.runat then
      zset(K.sched, id, w.runat)
    else
      zset(K.sched, id, false)
    end
  end
  -- Removing a job that is not active also drops a claim reservation (see claim.lua).
  if K.lease then
    if w.handed then
      zset(K.lease, id, w.handed)
    elseif w.lease then
      zset(K.lease, id, w.lease)
    else
      zset(K.lease, id, false)
    end
  end
  if K.fin then
    if w.fin then zset(K.fin, id, w.fin) else zset(K.fin, id, false) end
  end
end

-- A channel's events: the list `P:evl:{channel}`, one entry per event, `<id> <event>`, oldest
-- first, with the ids of the global stream (a subsequence of them: they increase too, and a
-- client may use one id in both). A list of a few entries costs a third of a stream's memory
-- (Redis 7.0 preallocates 4 KB for a new stream node) and less CPU to create. Once the channel
-- lost entries to `climit`, the list's head is the marker `~` in place of the entries dropped
-- (what `events.lua` reads as "trimmed", as a stream's entries-added > length): exactly
-- `climit` entries are kept after it. Returns the list's length after the push, before any trim
-- (1: the push created it).
local function chan_push(key, eid, ev)
  local n = redis.call('RPUSH', key, eid .. ' ' .. ev)
  if n <= climit then return n end
  -- Keep the newest `climit` + 1 elements, the first of them (the marker, or an entry past the
  -- limit) becoming the marker.
  if n == climit + 1 then
    if redis.call('LINDEX', key, 0) == '~' then return n end
  else
    redis.call('LTRIM', key, n - climit - 1, -1)
  end
  redis.call('LSET', key, 0, '~')
  return n
end

-- Appends event `ev` of write `w` (with its delivery `dlv`, if any); returns its id and, for a
-- list, whether the push created it. Streams (no `evl` declared): the channel's stream, with
-- the same id (channel ids are a subsequence of the global ones, so they increase too, and a
-- client may use one id in both). Lists: a push that creates one records the time of the
-- first list ever (`P:evlsince`, kept: events.lua's rule for an absent list needs it).
local function append(w, K, ev, dlv)
  local eid = xadd(K.ev, glimit, '*', ev)
  evented = true
  local created = false
  if K.evl then
    created = chan_push(K.evl, eid, ev) == 1
    if created then redis.call('SET', K.evlsince, string.match(eid, '^%d+'), 'NX') end
  else
    xadd(K.evc, climit, eid, ev)
  end
  if dlv then deliver(w, K, eid, ev, dlv) end
  return eid, created
end

-- The TTL of a channel the write appended to (`made`: the push created its list). Streams:
-- `w.ttl` refreshes the stream's TTL (builds before the list did just that). Lists: `w.ttl`: the
-- list's TTL and that of the channel's stream `P:evc:{channel}` (if any) are refreshed. A
-- stream writer's submit (a build before the list, or a node writing streams) refreshes only
-- the stream, and its changes of a young job refresh nothing, "the submit did": so a list
-- writer's submit refreshes the stream as a stream writer's does, for a stream writer's
-- changes of the job while both kinds run (a rolling update). A write that skips the refresh (a
-- change of a young job, whose submit refreshed the channel, or a channel this process
-- refreshed within the slack) checks the list's PTTL instead (one read) and refreshes it when
-- below `cmin`: the job's submit may have been a stream writer's, which refreshed the stream
-- and not the list. A list just created gets its TTL in any case.
local function chan_ttl(w, K, made)
  if not K.evl then
    if w.ttl then redis.call('PEXPIRE', K.evc, cttl) end
    return
  end
  if w.ttl or made then
    redis.call('PEXPIRE', K.evl, cttl)
  elseif cmin and redis.call('PTTL', K.evl) < cmin then
    redis.call('PEXPIRE', K.evl, cttl)
  end
  if w.ttl and K.evc then redis.call('PEXPIRE', K.evc, cttl) end
end

-- The keys a write may meet after its hash is written, checked before it writes (each once per
-- call): a file reference, an index or a wait met later would leave a job stored yet out of its
-- queue or its wait (answered as stored: `PART:`). Shared counters (`P:jc`) are not checked: they
-- are passed when of the wrong type (`flush_counts`).
local function precheck(w, K)
  local bad
  if w.event or w.event0 then
    if K.evl then bad = wrong_type(K.evl, 'list') else bad = wrong_type(K.evc, 'stream') end
    if bad then return bad end
  end
  -- (A numeric loop: `ipairs` would stop at the first key a write does not declare.)
  local zs = {K.all, K.q, K.qt, K.stold, K.stnew}
  for i = 1, 5 do
    bad = wrong_type(zs[i], 'zset')
    if bad then return bad end
  end
  if w.files or w.fgone then
    for _, k in ipairs(K.fref or {}) do
      bad = wrong_type(k, 'set')
      if bad then return bad end
    end
    for _, k in ipairs(K.fgone or {}) do
      bad = wrong_type(k, 'set')
      if bad then return bad end
    end
    bad = wrong_type(K.fhashes, 'set')
    if bad then return bad end
  end
  if w.wait then
    for _, k in ipairs(K.waitk or {}) do
      bad = wrong_type(k, 'set')
      if bad then return bad end
    end
    bad = wrong_type(K.waitdl, 'zset') or wrong_type(K.waitdue, 'zset')
    if bad then return bad end
  end
  return nil
end

local function commit_one(w)
  local K, id = w.K, w.id
  local cur = redis.pcall('HMGET', K.job, 'v', 's')
  if cur.err then return 'ERR:' .. cur.err end
  local bad = precheck(w, K)
  if bad then return 'ERR:' .. bad end
  local old = cur[2]
  if not w.v then
    if cur[1] then return 'EXISTS' end
    if K.idem then
      local other = redis.call('GET', K.idem)
      if other then return 'IDEM:' .. other end
      w.wrote = true
      redis.call('SET', K.idem, id)
    end
    if K.all then zset(K.all, id, 0) end
    old = false
  else
    if not cur[1] then return 'GONE' end
    if cur[1] ~= w.v then
      -- A version that is not a number (written by hand) never matches: reloading and applying
      -- again would only meet it again, so it is reported as the corrupt record it is.
      if not string.match(cur[1], '^%d+$') then
        return 'ERR:corrupt record: job ' .. id .. ': its version (`v`) is not a number'
      end
      return 'CONFLICT'
    end
  end
  w.wrote = true
  redis.call('HSET', K.job, 'v', w.nv, 's', w.st, 'r', w.r, 'q', w.q, 'c', w.c, 'b', w.b, 't', w.t)
  if w.idem then redis.call('HSET', K.job, 'k', w.idem) end
  if w.files then
    redis.call('HSET', K.job, 'f', w.files)
    local c = 0
    for h in string.gmatch(w.files, '%S+') do
      c = c + 1
      redis.call('SADD', K.fref[c], id)
      redis.call('SADD', K.fhashes, h)
    end
  end
  if w.fgone then
    -- The job holds no file any more: its list of hashes goes with them (retention reads it).
    if not w.files then redis.call('HDEL', K.job, 'f') end
    local c = 0
    for h in string.gmatch(w.fgone, '%S+') do
      c = c + 1
      redis.call('SREM', K.fgone[c], id)
      if redis.call('SCARD', K.fgone[c]) == 0 then redis.call('SREM', K.fhashes, h) end
    end
  end
  index(w, K, old)
  if w.wait then wait_move(w, K) end
  if w.emits then emit(w, K) end
  local eid, made0, made = '', false, false
  if w.event0 then eid, made0 = append(w, K, w.event0, w.dlv0) end
  if w.event then eid, made = append(w, K, w.event, w.dlv) end
  if w.event0 or w.event then chan_ttl(w, K, made0 or made) end
  if w.handed then return 'OKH:' .. eid end
  return 'OK:' .. eid
end

-- A key of the wrong type met by one write (one not checked above) fails that write only: its
-- reply says whether it wrote anything ('ERR:', 'PART:'), and the other writes go on. Any other
-- failing command ends the script, and what it wrote stays: the index changes of the writes
-- already made are applied and announced before the error goes back, so a job whose hash was
-- written is counted, listed and queued (a retried submit finds it as `EXISTS`), never stored
-- but out of every index.
local out = {}
local ok, err = pcall(function()
  for j, w in ipairs(W) do
    local done, r = pcall(commit_one, w)
    if not done then
      local e = r
      if type(e) == 'table' then e = e.err end
      if type(e) ~= 'string' or not string.match(e, '^WRONGTYPE') then error(r, 0) end
      if w.wrote then r = 'PART:' .. e else r = 'ERR:' .. e end
    end
    out[j] = r
  end
end)
flush_index()
if evented and S.evwant and redis.call('EXISTS', S.evwant) == 1 then notice = notice .. '\nE' end
if notice ~= H.origin then redis.call('PUBLISH', H.notices, notice) end
if marked then
  redis.call('PUBLISH', H.notices, '\nC 00000000-0000-0000-0000-000000000000 WAITING')
end
if not ok then
  -- Redis 7.0 hands pcall a failed command's error as its text ("READONLY ...", "WRONGTYPE
  -- ..."): reply with it as it is, so its code (which the caller retries on, for READONLY)
  -- stays; anything else (a table from newer Redis, a Lua error) is raised again.
  if type(err) == 'string' and string.match(err, '^%u[%u%d_]* ') then
    return redis.error_reply(err)
  end
  error(err, 0)
end
return out
