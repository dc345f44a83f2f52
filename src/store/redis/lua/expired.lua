-- The reaper's view of the lease set: entries whose expiry passed.
-- - a claim reservation whose job is still QUEUED (its claimer died before saving the claim)
--   goes back to the runner's queue, at its old place;
-- - an active job (STARTING/RUNNING) is returned: its lease expired, the reaper decides in Rust;
-- - anything else is a stale entry and is dropped.
-- Safe on every node at once: each step is atomic and idempotent.
--
-- KEYS[1] `P:lease`. The jobs' hashes `P:job:{id}` and their runners' queues `P:q:{runner}` are
-- named by the lease set's entries, so they cannot be declared beforehand: ARGV[3] and ARGV[4]
-- are their prefixes (see claim.lua for Redis Cluster).
-- ARGV[1] now (µs), ARGV[2] max, ARGV[3] job key prefix `P:job:`, ARGV[4] queue prefix `P:q:`.
-- Returns {version1, body1, ...}.
local leases = KEYS[1]
local now, max, job_prefix, queue_prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local ids = redis.call('ZRANGEBYSCORE', leases, '-inf', '(' .. now, 'LIMIT', 0, max)
local out = {}
for _, id in ipairs(ids) do
  local h = redis.call('HMGET', job_prefix .. id, 's', 'r', 'q', 'v', 'b')
  local st = h[1]
  if st == 'STARTING' or st == 'RUNNING' then
    out[#out + 1] = h[4]
    out[#out + 1] = h[5]
  else
    redis.call('ZREM', leases, id)
    if st == 'QUEUED' then
      redis.call('ZADD', queue_prefix .. h[2], h[3], id)
    end
  end
end
return out
