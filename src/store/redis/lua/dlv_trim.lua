-- Deletes webhook deliveries that ended (delivered or given up) before a time, with their
-- attempt logs and job index entries (see src/store/redis/deliveries.rs).
--
-- KEYS[1] `P:dlv:done`. The deliveries' hashes, attempt logs and job indexes are named by the
-- numbers found there and the job each names, so they cannot be declared beforehand: ARGV[3..5]
-- are their prefixes (Redis Cluster: see docs/redis.md, every key in one hash slot through the
-- prefix's hash tag).
-- ARGV[1] before (µs), ARGV[2] most to delete, ARGV[3] `P:dlv:`, ARGV[4] `P:dlvlog:`,
-- ARGV[5] `P:dlv:job:`.
-- A key of the wrong type (checked with `TYPE`, as `dlv_claim.lua` does) is left as it is and
-- costs its own delivery only, met once: a delivery whose hash is not a hash (its job, so its
-- index entry, unknown) has its attempt log deleted (when a list) and leaves `done`; one whose
-- attempt log, or whose job's index, is not of its type has its other keys deleted as ever.
-- `done` of the wrong type fails the trim naming it, having written nothing.
-- Returns how many ended deliveries left `done`, then a line per key passed
-- ('<key> is a <type>'), for the caller to log.
local done = KEYS[1]
local before, max, dlv_prefix, log_prefix, job_prefix =
  ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]

-- Why `key` cannot be used as a `want` ('<key> is a <type>'), nil when it can (or is missing).
local function bad_type(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= want and t ~= 'none' then return key .. ' is a ' .. t end
end

local b = bad_type(done, 'zset')
if b then return redis.error_reply('WRONGTYPE ' .. b .. ', not a sorted set') end
local passed = {}
local ids = redis.call('ZRANGEBYSCORE', done, '-inf', '(' .. before, 'LIMIT', 0, max)
for _, n in ipairs(ids) do
  local k, lk = dlv_prefix .. n, log_prefix .. n
  local bk, bl = bad_type(k, 'hash'), bad_type(lk, 'list')
  if bk then passed[#passed + 1] = bk end
  if bl then passed[#passed + 1] = bl end
  if not bk then
    local job = redis.call('HGET', k, 'j')
    if job then
      local bj = bad_type(job_prefix .. job, 'zset')
      if bj then passed[#passed + 1] = bj else redis.call('ZREM', job_prefix .. job, n) end
    end
    redis.call('DEL', k)
  end
  if not bl then redis.call('DEL', lk) end
  redis.call('ZREM', done, n)
end
local reply = {tostring(#ids)}
for _, p in ipairs(passed) do reply[#reply + 1] = p end
return reply
