-- Deletes webhook deliveries that ended (delivered or given up) before a time, with their
-- attempt logs and job index entries (see src/store/redis/deliveries.rs).
--
-- KEYS[1] `P:dlv:done`. The deliveries' hashes, attempt logs and job indexes are named by the
-- numbers found there and the job each names, so they cannot be declared beforehand: ARGV[3..5]
-- are their prefixes (Redis Cluster: see docs/redis.md, every key in one hash slot through the
-- prefix's hash tag).
-- ARGV[1] before (µs), ARGV[2] most to delete, ARGV[3] `P:dlv:`, ARGV[4] `P:dlvlog:`,
-- ARGV[5] `P:dlv:job:`.
-- Returns how many were deleted.
local done = KEYS[1]
local before, max, dlv_prefix, log_prefix, job_prefix =
  ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local ids = redis.call('ZRANGEBYSCORE', done, '-inf', '(' .. before, 'LIMIT', 0, max)
for _, n in ipairs(ids) do
  local k = dlv_prefix .. n
  local job = redis.call('HGET', k, 'j')
  if job then redis.call('ZREM', job_prefix .. job, n) end
  redis.call('DEL', k, log_prefix .. n)
  redis.call('ZREM', done, n)
end
return #ids
