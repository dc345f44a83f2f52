-- Deletes finished jobs that finished before a time, with everything that belongs to them: their
-- index entries, idempotency key, logs and file references. Safe on every node at once.
--
-- KEYS[1] `P:fin`, KEYS[2] `P:all`, KEYS[3] `P:jc` (job counts), KEYS[4] `P:fhashes`. The keys of
-- each job (`P:job:{id}`, `P:st:{status}`, `P:idem:{key}`, `P:fref:{hash}`, `P:log:{id}`,
-- `P:logn:{id}`, `P:jch:{channel}`) are named by what `P:fin` and the job hold, so they cannot be
-- declared beforehand: ARGV[3..9] are their prefixes (Redis Cluster: see docs/redis.md, every key in one
-- hash slot through the prefix's hash tag).
-- ARGV[1] finished before (µs), ARGV[2] max, ARGV[3] `P:job:`, ARGV[4] `P:st:`, ARGV[5]
-- `P:idem:`, ARGV[6] `P:fref:`, ARGV[7] `P:log:`, ARGV[8] `P:logn:`, ARGV[9] `P:jch:` (the
-- channel index, src/store/redis/chanidx.rs: a job leaves its channel's set).
-- Returns the number of jobs deleted.
local fin, all, jc, fhashes = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local before, max = ARGV[1], tonumber(ARGV[2])
local job_p, st_p, idem_p, fref_p, log_p, logn_p = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local jch_p = ARGV[9]
-- `P:jc` found of another type this pass: passed from then on.
local jc_bad = false
local ids = redis.call('ZRANGEBYSCORE', fin, '-inf', '(' .. before, 'LIMIT', 0, max)
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

for _, id in ipairs(ids) do
  local key = job_p .. id
  local h = redis.pcall('HMGET', key, 's', 'k', 'f', 't', 'c')
  if h.err then
    -- A job key of another type (a hand edit, another program sharing the Redis): not
    -- deleted (what it is is not known), but out of `P:fin`, so that retention goes on past it
    -- (it failed every pass); the job stays listed where it is (a listing logs it unreadable).
    redis.log(redis.LOG_WARNING, 'runyard retention: ' .. key .. ' left as it is: ' .. h.err)
  else
    forget(id, key, h)
  end
  redis.call('ZREM', fin, id)
end
return #ids
