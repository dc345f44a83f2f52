-- Builds the job counts once for a database written before they existed: `P:jc` (a hash of
-- counters, field `{type}\n{status}`) and `P:qt:{type}` (the QUEUED jobs of a type, scored by
-- queued_at), then sets `P:jc:ready`. From then on commit.lua and retention.lua keep them in step
-- in the same script as the job. Atomic, so a commit cannot fall between the read and the write.
-- Reads every job once (the type from the record's JSON when the job hash has no `t`).
--
-- KEYS[1] `P:jc:ready`, KEYS[2] `P:jc`, KEYS[3] `P:all`. The jobs' hashes and the type queues
-- are named by what `P:all` and the jobs hold, so they cannot be declared beforehand: ARGV[1] is
-- the job key prefix `P:job:`, ARGV[2] the type queue prefix `P:qt:` (Redis Cluster: see
-- docs/redis.md, every key in one hash slot through the prefix's hash tag).
-- ARGV[3] `rebuild`: builds them again although they were there (a count found not a number: a
-- hand edit); `unless-hash`: the same unless `P:jc` is a hash (found of another type, it may have
-- been rebuilt by another reader since; commit.lua and retention.lua pass it meanwhile).
-- Returns 1 when it built the counts, 0 when they were there.
local ready, jc, all = KEYS[1], KEYS[2], KEYS[3]
local job_prefix, qt_prefix = ARGV[1], ARGV[2]
if redis.call('EXISTS', ready) == 1 then
  -- Built: only a rebuild asked for goes on (`unless-hash`: not when another reader found the
  -- key of another type too, and rebuilt it first).
  local mode = ARGV[3]
  if mode ~= 'rebuild' and (mode ~= 'unless-hash' or redis.call('TYPE', jc).ok == 'hash') then
    return 0
  end
end
redis.call('DEL', jc)
for _, id in ipairs(redis.call('ZRANGE', all, 0, -1)) do
  local key = job_prefix .. id
  -- pcall: a job key of another type (a hand edit) is not counted, like a hash without `t`.
  local h = redis.pcall('HMGET', key, 's', 't', 'b', 'q')
  if h[1] then
    local t = h[2]
    if not t then
      local ok, j = pcall(cjson.decode, h[3] or '')
      if ok and type(j) == 'table' and type(j['type']) == 'string' then
        t = j['type']
        redis.call('HSET', key, 't', t)
      end
    end
    if t then
      redis.call('HINCRBY', jc, t .. '\n' .. h[1], 1)
      if h[1] == 'QUEUED' then
        -- pcall: a type queue of another type is passed (logged), the counts still built whole.
        local r = redis.pcall('ZADD', qt_prefix .. t, tonumber(h[4]) or 0, id)
        if type(r) == 'table' and r.err then
          redis.log(redis.LOG_WARNING, 'runyard counts: ' .. qt_prefix .. t .. ' passed: ' .. r.err)
        end
      end
    end
  end
end
redis.call('SET', ready, '1')
return 1
