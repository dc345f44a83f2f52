-- The reaper's view of the lease set: entries whose expiry passed.
-- - a claim reservation whose job is still QUEUED (its claimer died before saving the claim)
--   goes back to the runner's queue, at its old place;
-- - an active job (STARTING/RUNNING) is returned: its lease expired, the reaper decides in Rust;
-- - so is a CANCELLED one: its worker kept the lease while it stopped the work and let it run
--   out (gone or hung) before it said so; the reaper makes sure the work is gone, then gives
--   the lease up (`Command::StopLost`), which takes the entry out of the set;
-- - anything else is a stale entry and is dropped;
-- - a job whose hash is of another type (a hand edit, another program sharing the Redis) is
--   returned as an active one with `!` and Redis's error in place of its record: it stays in
--   the set (the reaper passes it, logged), read again each pass, and goes back to its queue
--   once its hash reads again (QUEUED). It once failed every pass, and the reaper stalled.
-- Safe on every node at once: each step is atomic and idempotent.
--
-- KEYS[1] `P:lease`. The jobs' hashes `P:job:{id}` and their runners' queues `P:q:{runner}` are
-- named by the lease set's entries, so they cannot be declared beforehand: they are built from
-- one prefix per family, `jobp` (`P:job:`) and `qp` (`P:q:`) (Redis Cluster: see docs/redis.md,
-- every key in one hash slot through the prefix's hash tag).
-- ARGV is name/value pairs: `now` (µs), `max` most entries to look at, `skip` how many of the
-- oldest expired entries to pass first (default 0: they are active ones a page before this one
-- returned, still in the set; see `RedisStore::expired`), `jobp`, `qp`, `notices`
-- the notice channel: a job put back in its queue is announced there (`Q {runner}`, from no
-- origin: every process hears it, this one too), as commit.lua announces new QUEUED jobs.
-- Returns {entries looked at, id1, record1, id2, record2, ...} (the active and cancelled ones).
local leases = KEYS[1]
local A = {}
for i = 1, #ARGV, 2 do A[ARGV[i]] = ARGV[i + 1] end
local now, max, job_prefix, queue_prefix = A.now, tonumber(A.max), A.jobp, A.qp
local announced, notice = {}, ''
local ids = redis.call('ZRANGEBYSCORE', leases, '-inf', '(' .. now, 'LIMIT', tonumber(A.skip) or 0, max)
local out = { tostring(#ids) }
for _, id in ipairs(ids) do
  local h = redis.pcall('HMGET', job_prefix .. id, 's', 'r', 'q', 'b')
  local st = h[1]
  if h.err then
    out[#out + 1] = id
    out[#out + 1] = '!' .. h.err
  elseif st == 'STARTING' or st == 'RUNNING' or st == 'CANCELLED' then
    out[#out + 1] = id
    out[#out + 1] = h[4] or ''
  elseif st == 'QUEUED' then
    -- Back in its queue first, out of the set then: a queue of another type keeps the
    -- reservation where it is (passed like an unreadable record), never in neither.
    local r = redis.pcall('ZADD', queue_prefix .. h[2], h[3], id)
    if type(r) == 'table' and r.err then
      out[#out + 1] = id
      out[#out + 1] = '!' .. r.err
    else
      redis.call('ZREM', leases, id)
      if not announced[h[2]] then
        announced[h[2]] = true
        notice = notice .. '\nQ ' .. h[2]
      end
    end
  else
    redis.call('ZREM', leases, id)
  end
end
if notice ~= '' and A.notices then redis.call('PUBLISH', A.notices, notice) end
return out
