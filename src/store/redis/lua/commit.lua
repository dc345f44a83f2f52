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
-- ARGV[1] prefix, ARGV[2] global stream limit, ARGV[3] channel stream limit,
-- ARGV[4] channel stream TTL (ms), ARGV[5] number of jobs, ARGV[6] the committing process's
-- notice origin, then 17 values per job:
--   id, expected version ('' = the job must not exist: a submit), new version, status, runner,
--   channel, queued_at, run_at ('' none), lease expiry ('' none, '=' unchanged: the job was
--   active with this same expiry at the expected version), finished_at ('' none),
--   idempotency key ('' none), file hashes (space separated, '' none), body (JSON),
--   event (JSON, '' none), signal keys to write if this write makes the job SUCCESS (`emits`,
--   separated by newlines, '' none; see signal_append.lua for the keys they touch),
--   job type (the job counts, see counts.lua: `P:jc` counters by type and status, `P:qt:{type}`
--   the QUEUED jobs of a type by queued_at),
--   webhook delivery of the event ('' none, else "<created_at µs>\n<url>"; see deliveries.rs)
-- Returns one reply per job:
--   'OK:<event id>' (event id empty without event), 'CONFLICT' (version changed: reload and
--   apply again), 'GONE' (the job no longer exists), 'EXISTS' (a submit whose id is already
--   stored: a retried submit), 'IDEM:<job id>' (a submit whose idempotency key is taken).
local P = ARGV[1]
local glimit = tonumber(ARGV[2])
local climit = tonumber(ARGV[3])
local cttl = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local origin = ARGV[6]
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
  local g = redis.call('INCR', P .. ':waitgen')
  redis.call('ZADD', P .. ':waitdue', g, id)
  marked = true
end

local function mark_key(skey)
  for _, wid in ipairs(redis.call('SMEMBERS', P .. ':waitk:' .. skey)) do mark_due(wid) end
end

local function wait_of(body)
  local ok, j = pcall(cjson.decode, body)
  local keys = {}
  if not ok or type(j) ~= 'table' or type(j.wait) ~= 'table' then return keys, nil end
  if type(j.wait.items) == 'table' then
    for _, it in ipairs(j.wait.items) do
      if type(it) == 'table' and type(it.key) == 'string' then keys[#keys + 1] = it.key end
    end
  end
  local dl = j.wait.deadline
  if type(dl) ~= 'number' then dl = nil end
  return keys, dl
end

local function wait_enter(id, body)
  local keys, dl = wait_of(body)
  for _, k in ipairs(keys) do redis.call('SADD', P .. ':waitk:' .. k, id) end
  if dl then redis.call('ZADD', P .. ':waitdl', string.format('%.0f', dl), id) end
  mark_due(id)
end

local function wait_leave(id, body)
  local keys = wait_of(body)
  for _, k in ipairs(keys) do redis.call('SREM', P .. ':waitk:' .. k, id) end
  redis.call('ZREM', P .. ':waitdl', id)
  redis.call('ZREM', P .. ':waitdue', id)
end

-- A job's `emits` when it becomes SUCCESS: one signal per key, id `job:{id}` (so a key already
-- signalled by this job is not signalled twice), written with the job.
local function emit(id, keys, at)
  for skey in string.gmatch(keys, '[^\n]+') do
    local sig = P .. ':sig:' .. skey
    local sid = P .. ':sigid:' .. skey
    local cid = 'job:' .. id
    if not redis.call('HGET', sid, cid) then
      local seq = redis.call('HINCRBY', P .. ':sigseq', skey, 1)
      local rec = '{"key":' .. cjson.encode(skey) .. ',"seq":' .. seq .. ',"at":' .. at ..
        ',"id":' .. cjson.encode(cid) .. ',"payload":{"job_id":' .. cjson.encode(id) .. '}}'
      redis.call('ZADD', sig, at, rec)
      redis.call('HSET', sid, cid, rec)
      if redis.call('ZCARD', sig) > 10000 then redis.call('ZREMRANGEBYRANK', sig, 0, -10001) end
      redis.call('ZADD', P .. ':sigkeys', at, skey)
      mark_key(skey)
    end
  end
end

-- A webhook delivery of event `eid` (signed webhooks out, src/store/redis/deliveries.rs): a hash
-- per delivery, due at once.
local function deliver(id, eid, ev, dlv)
  local at, url = string.match(dlv, '^(%d+)\n(.+)$')
  if not at then return end
  local n = redis.call('INCR', P .. ':dlv:seq')
  redis.call('HSET', P .. ':dlv:' .. n, 'j', id, 'u', url, 'e', eid, 'b', ev, 't', at,
    'st', 'pending', 'n', 0)
  redis.call('ZADD', P .. ':dlv:due', at, n)
  redis.call('ZADD', P .. ':dlv:job:' .. id, n, n)
end

local function commit_one(a)
  local id, expv, newv, st, runner, chan, qat, runat, lease, fin, idem, files, body, ev, emits, jt =
    a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15],
    a[16]
  local dlv = a[17]
  local key = P .. ':job:' .. id
  local cur = redis.call('HMGET', key, 'v', 's')
  local old = cur[2]
  if expv == '' then
    if cur[1] then return 'EXISTS' end
    if idem ~= '' then
      local other = redis.call('GET', P .. ':idem:' .. idem)
      if other then return 'IDEM:' .. other end
      redis.call('SET', P .. ':idem:' .. idem, id)
    end
    redis.call('ZADD', P .. ':all', 0, id)
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
      if redis.call('HINCRBY', P .. ':jc', f, -1) <= 0 then redis.call('HDEL', P .. ':jc', f) end
    end
    redis.call('HINCRBY', P .. ':jc', jt .. '\n' .. st, 1)
  end
  if st == 'QUEUED' then
    redis.call('ZADD', P .. ':qt:' .. jt, qat, id)
  elseif old == 'QUEUED' then
    redis.call('ZREM', P .. ':qt:' .. jt, id)
  end
  if idem ~= '' then redis.call('HSET', key, 'k', idem) end
  if files ~= '' then
    redis.call('HSET', key, 'f', files)
    for h in string.gmatch(files, '%S+') do
      redis.call('SADD', P .. ':fref:' .. h, id)
      redis.call('SADD', P .. ':fhashes', h)
    end
  end
  -- Index entries follow the status. STARTING and RUNNING have none: those jobs are listed from
  -- the lease set, which holds every active job.
  if old ~= st then
    if old and not ACTIVE[old] then redis.call('ZREM', P .. ':st:' .. old, id) end
    if not ACTIVE[st] then redis.call('ZADD', P .. ':st:' .. st, 0, id) end
  end
  local qk = P .. ':q:' .. runner
  if st == 'QUEUED' then
    redis.call('ZADD', qk, qat, id)
    if old ~= 'QUEUED' and not announced[runner] then
      announced[runner] = true
      redis.call('PUBLISH', P .. ':notices', origin .. '\nQ ' .. runner)
    end
  elseif old == 'QUEUED' then
    redis.call('ZREM', qk, id)
  end
  if st == 'SCHEDULED' and runat ~= '' then
    redis.call('ZADD', P .. ':sched', runat, id)
  elseif old == 'SCHEDULED' then
    redis.call('ZREM', P .. ':sched', id)
  end
  -- Removing a non-active job also drops a claim reservation (see claim.lua).
  if ACTIVE[st] and lease == '=' then
    -- Unchanged (active before and after, same expiry): the entry is already there.
  elseif ACTIVE[st] and lease ~= '' then
    redis.call('ZADD', P .. ':lease', lease, id)
  elseif old then
    redis.call('ZREM', P .. ':lease', id)
  end
  if fin ~= '' then
    redis.call('ZADD', P .. ':fin', fin, id)
  elseif old and TERMINAL[old] then
    redis.call('ZREM', P .. ':fin', id)
  end
  if st == 'WAITING' and old ~= 'WAITING' then
    wait_enter(id, body)
  elseif old == 'WAITING' and st ~= 'WAITING' then
    wait_leave(id, body)
  end
  if st == 'SUCCESS' and old ~= 'SUCCESS' and emits ~= '' and fin ~= '' then
    emit(id, emits, fin)
  end
  local eid = ''
  if ev ~= '' then
    eid = xadd(P .. ':ev', glimit, '*', ev)
    -- Same id in the channel stream: channel ids are a subsequence of the global ones, so they
    -- increase too, and a client may use one id in both.
    local ck = P .. ':evc:' .. chan
    xadd(ck, climit, eid, ev)
    redis.call('PEXPIRE', ck, cttl)
    if dlv ~= '' then deliver(id, eid, ev, dlv) end
  end
  return 'OK:' .. eid
end

local out = {}
local i = 7
for j = 1, n do
  local a = {}
  for k = 0, 16 do a[k + 1] = ARGV[i + k] end
  i = i + 17
  out[j] = commit_one(a)
end
if marked then
  redis.call('PUBLISH', P .. ':notices', '\nC 00000000-0000-0000-0000-000000000000 WAITING')
end
return out
