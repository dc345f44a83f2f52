-- Deletes finished jobs that finished before a time, with everything that belongs to them: their
-- index entries, idempotency key, logs and file references. Safe on every node at once.
--
-- A job with a webhook delivery that has not ended (pending: due, being attempted, waiting for a
-- retry) is not deleted: its delivery log is read through the job, and a job deleted before
-- answered 404 while `runyard_webhook_deliveries_pending` counted its deliveries (probe s53c
-- F2). It leaves `P:fin` for `P:fin:held`, scored by when to look at it again: its pending
-- delivery's due time, at least ARGV[12] from now; `dlv_record.lua` moves that to 0 when a
-- delivery of a held job ends, so the first pass after its last one ended deletes it. A job
-- without a webhook costs one `EXISTS` of its deliveries' index.
--
-- KEYS[1] `P:fin`, KEYS[2] `P:all`, KEYS[3] `P:jc` (job counts), KEYS[4] `P:fhashes`, KEYS[5]
-- `P:fin:held`, KEYS[6] `P:dlv:pend` (pending deliveries), KEYS[7] `P:dlv:due` (the earlier
-- layout's). The keys of each job (`P:job:{id}`, `P:st:{status}`, `P:idem:{key}`,
-- `P:fref:{hash}`, `P:log:{id}`, `P:logn:{id}`, `P:jch:{channel}`, `P:dlv:job:{id}`) are named
-- by what `P:fin` and the job hold, so they cannot be declared beforehand: ARGV[3..10] are their
-- prefixes (Redis Cluster: see docs/redis.md, every key in one hash slot through the prefix's
-- hash tag).
-- ARGV[1] finished before (µs), ARGV[2] max, ARGV[3] `P:job:`, ARGV[4] `P:st:`, ARGV[5]
-- `P:idem:`, ARGV[6] `P:fref:`, ARGV[7] `P:log:`, ARGV[8] `P:logn:`, ARGV[9] `P:jch:` (the
-- channel index, src/store/redis/chanidx.rs: a job leaves its channel's set), ARGV[10]
-- `P:dlv:job:` (a job's deliveries), ARGV[11] now (µs, the store's clock), ARGV[12] the least
-- wait (µs) before a held job is looked at again without a word from `dlv_record.lua` (its
-- delivery ended by a build before this one, or passed as of the wrong type).
-- Returns {entries of `P:fin` taken, entries of `P:fin:held` taken, jobs deleted}.
local fin, all, jc, fhashes = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local held, pend, earlier = KEYS[5], KEYS[6], KEYS[7]
local before, max = ARGV[1], tonumber(ARGV[2])
local job_p, st_p, idem_p, fref_p, log_p, logn_p = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local jch_p, djob_p = ARGV[9], ARGV[10]
local now, recheck = tonumber(ARGV[11]), tonumber(ARGV[12])
-- `P:jc` found of another type this pass: passed from then on.
local jc_bad = false
-- A command on one of a job's own keys (its status index, idempotency key, file reference,
-- channel index): one of the wrong type (a hand edit, another program sharing the Redis) is
-- logged and passed, so the job is still deleted whole and retention goes on past it.
local function own(cmd, key, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == 'table' and r.err then
    redis.log(redis.LOG_WARNING, 'runyard retention: ' .. key .. ' passed: ' .. r.err)
    return nil
  end
  return r
end

-- Deletes job `id` (its hash `key`, whose fields `h` were read) with everything of it.
local function forget(id, key, h)
  if h[1] then own('ZREM', st_p .. h[1], id) end
  -- Job counts (see counts.lua; a job without `t` predates them and is counted by its rebuild).
  -- Of the wrong type, `P:jc` is passed (logged once a pass): the next read of the counts
  -- rebuilds them.
  if h[1] and h[4] and not jc_bad then
    local f = h[4] .. '\n' .. h[1]
    local n = redis.pcall('HINCRBY', jc, f, -1)
    if type(n) == 'number' then
      if n <= 0 then redis.call('HDEL', jc, f) end
    else
      redis.log(redis.LOG_WARNING, 'runyard retention: ' .. jc .. ' passed: ' .. tostring(n.err))
      jc_bad = string.match(tostring(n.err), '^WRONGTYPE') ~= nil
    end
  end
  if h[2] and own('GET', idem_p .. h[2]) == id then
    redis.call('DEL', idem_p .. h[2])
  end
  if h[3] then
    for hash in string.gmatch(h[3], '%S+') do
      local rk = fref_p .. hash
      own('SREM', rk, id)
      if own('SCARD', rk) == 0 then redis.call('SREM', fhashes, hash) end
    end
  end
  if h[5] and h[5] ~= id then own('ZREM', jch_p .. h[5], id) end
  redis.call('DEL', key, log_p .. id, logn_p .. id)
  redis.call('ZREM', all, id)
end

-- The pending sets, read only when of their type (else as empty: the claim passes them, logged).
local function zset_or_none(key)
  local t = redis.call('TYPE', key)['ok']
  return t == 'zset' or t == 'none'
end
local pend_ok, earlier_ok = zset_or_none(pend), zset_or_none(earlier)
-- `P:fin:held` of another type (a hand edit): no job is kept (deleted as before it was), logged.
local held_ok = zset_or_none(held)
if not held_ok then
  redis.log(redis.LOG_WARNING, 'runyard retention: ' .. held .. ' passed: not a sorted set')
end

-- The due time of a delivery of job `id` that has not ended (in either pending set), false when
-- every one ended (or it has none). Newest first, a page at a time: a pending delivery is most
-- often among the last (the terminal event's), and one is enough.
local function open_delivery(id)
  local jk = djob_p .. id
  if redis.call('EXISTS', jk) == 0 then return false end
  local from = 0
  while true do
    local ns = own('ZREVRANGE', jk, from, from + 99)
    if not ns or #ns == 0 then return false end
    for _, n in ipairs(ns) do
      local due = (pend_ok and redis.call('ZSCORE', pend, n))
        or (earlier_ok and redis.call('ZSCORE', earlier, n))
      if due then return tonumber(due) end
    end
    from = from + 100
  end
end

-- Job `id` (its hash `key`, fields `h`): deleted, or held while a delivery of it is pending.
-- Returns 1 when deleted.
local function finish(id, key, h)
  local due = held_ok and open_delivery(id)
  if due then
    redis.call('ZADD', held, string.format('%.0f', math.max(due, now + recheck)), id)
    return 0
  end
  forget(id, key, h)
  if held_ok then redis.call('ZREM', held, id) end
  return 1
end

local terminal = {SUCCESS = true, ERROR = true, TIMEOUT = true, CANCELLED = true}
local deleted = 0
-- Held jobs due for another look. One that is gone, unreadable, running again (a retry; it
-- comes back to `P:fin` when it ends) or back in `P:fin` (finished again) leaves `P:fin:held`.
local back = {}
if held_ok then back = redis.call('ZRANGEBYSCORE', held, '-inf', now, 'LIMIT', 0, max) end
for _, id in ipairs(back) do
  local key = job_p .. id
  local h = redis.pcall('HMGET', key, 's', 'k', 'f', 't', 'c')
  if h.err or redis.call('EXISTS', key) == 0 or (h[1] and not terminal[h[1]])
      or redis.call('ZSCORE', fin, id) then
    redis.call('ZREM', held, id)
  else
    deleted = deleted + finish(id, key, h)
  end
end

local ids = redis.call('ZRANGEBYSCORE', fin, '-inf', '(' .. before, 'LIMIT', 0, max)
for _, id in ipairs(ids) do
  local key = job_p .. id
  local h = redis.pcall('HMGET', key, 's', 'k', 'f', 't', 'c')
  if h.err then
    -- A job key of another type (a hand edit, another program sharing the Redis): not
    -- deleted (what it is is not known), but out of `P:fin`, so that retention goes on past it
    -- (it failed every pass); the job stays listed where it is (a listing logs it unreadable).
    redis.log(redis.LOG_WARNING, 'runyard retention: ' .. key .. ' left as it is: ' .. h.err)
  else
    deleted = deleted + finish(id, key, h)
  end
  redis.call('ZREM', fin, id)
end
return {#ids, #back, deleted}
