-- One chunk of the dead letters, counted by type (src/store/redis/activity.rs): the ERROR jobs
-- of `P:st:ERROR` whose attempts are used up (`attempt >= max_attempts` in the job's record, the
-- job's JSON or the compact form of `store.records = "compact"`). Read
-- only; at most `n` jobs per call, so Redis is never held for long.
--
-- KEYS[1] `P:st:ERROR` (ERROR jobs, score 0, ordered by id). The jobs' hashes are named by what
-- it holds: ARGV[1] is the job key prefix `P:job:` (Redis Cluster: docs/redis.md).
-- ARGV[2] where to start (`-` the first, `(id` after that id), ARGV[3] the chunk size.
-- Returns {next, type1, count1, ...}: `next` is where the next chunk starts ('' when this was
-- the last).
local errors = KEYS[1]
local prefix, from, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYLEX', errors, from, '+', 'LIMIT', 0, n)
local counts, order = {}, {}
for _, id in ipairs(ids) do
  -- pcall: a job key of another type (a hand edit) is passed, not the whole count failed.
  local h = redis.pcall('HMGET', prefix .. id, 's', 'b')
  if h[1] == 'ERROR' then
    local ok, j = pcall(cjson.decode, h[2] or '')
    local t, attempt, max
    if ok and type(j) == 'table' then
      if j['id'] ~= nil then
        -- The job's JSON.
        t, attempt, max = j['type'], tonumber(j['attempt']) or 0, tonumber(j['max_attempts']) or 0
      else
        -- The compact form (src/store/job_record.rs): `n` absent is 0, `m` absent 1.
        t, attempt, max = j['ty'], tonumber(j['n']) or 0, tonumber(j['m']) or 1
      end
    end
    if type(t) == 'string' and attempt >= max then
      if not counts[t] then
        counts[t] = 0
        order[#order + 1] = t
      end
      counts[t] = counts[t] + 1
    end
  end
end
local out = { '' }
if #ids == n then out[1] = '(' .. ids[#ids] end
for _, t in ipairs(order) do
  out[#out + 1] = t
  out[#out + 1] = counts[t]
end
return out
