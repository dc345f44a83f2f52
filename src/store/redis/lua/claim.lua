-- Picks the oldest QUEUED jobs of a runner for a claim. The ids move from the runner's queue
-- into the lease set with a short reservation expiry in this same script, so a worker that dies
-- before it saves its claims loses nothing: the reaper (expired.lua) puts reservations whose job
-- is still QUEUED back in the queue. The claim itself (QUEUED -> STARTING, fencing token, lease)
-- is applied in Rust and saved with commit.lua, which replaces the reservation by the lease.
--
-- KEYS[1] the runner's queue `P:q:{runner}`, KEYS[2] `P:token` (fencing tokens), KEYS[3]
-- `P:lease`. The jobs' hashes `P:job:{id}` are named by the ids popped from the queue, so they
-- cannot be declared beforehand: they are built from the job key prefix `P:job:` (argument
-- `jobp`; Redis Cluster: see docs/redis.md, every key in one hash slot through the prefix's hash
-- tag).
-- ARGV is name/value pairs: `max` most jobs to pick, `until` reservation expiry (µs), `jobp`.
-- Returns {first fencing token, jobs popped, id1, version1, body1, id2, ...}, or {} when the
-- queue is empty (fewer popped than `max`: this pick emptied the queue, see hints.rs).
local queue, tokens, leases = KEYS[1], KEYS[2], KEYS[3]
local A = {}
for i = 1, #ARGV, 2 do A[ARGV[i]] = ARGV[i + 1] end
local max, reserve_until, job_prefix = tonumber(A.max), A['until'], A.jobp
local picked = redis.call('ZPOPMIN', queue, max)
if #picked == 0 then return {} end
local n = #picked / 2
local last = redis.call('INCRBY', tokens, n)
local out = { last - n + 1, n }
-- The reservations go in one ZADD (the pick is at most a worker's free slots).
local reserve = {}
for i = 1, #picked, 2 do
  local id = picked[i]
  local h = redis.call('HMGET', job_prefix .. id, 'v', 'b')
  if h[1] then
    reserve[#reserve + 1] = reserve_until
    reserve[#reserve + 1] = id
    out[#out + 1] = id
    out[#out + 1] = h[1]
    out[#out + 1] = h[2] or ''
  end
end
for i = 1, #reserve, 4000 do
  redis.call('ZADD', leases, unpack(reserve, i, math.min(i + 3999, #reserve)))
end
return out
