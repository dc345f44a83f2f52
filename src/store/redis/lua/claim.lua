-- Picks the oldest QUEUED jobs of a runner for a claim. The ids move from the runner's queue
-- into the lease set with a short reservation expiry in this same script, so a worker that dies
-- before it saves its claims loses nothing: the reaper (expired.lua) puts reservations whose job
-- is still QUEUED back in the queue. The claim itself (QUEUED -> STARTING, fencing token, lease)
-- is applied in Rust and saved with commit.lua, which replaces the reservation by the lease.
--
-- Redis does not undo what a script wrote before a command of it failed (a key of the wrong
-- type: a hand edit, another program sharing the Redis): everything that can fail is read or
-- checked first, and only then does the script write, so a failed pick changes nothing (it once
-- popped the jobs and failed on the next one's hash, and the jobs it popped were in no set).
-- A job whose hash is of another type is reserved like the others, and returned with `!` and
-- Redis's error in place of its record: the claim leaves it out (logged), and it stays in the
-- lease set, where the reaper meets it each pass (logged) and puts it back in its queue once
-- its hash reads again (QUEUED). Kept in the queue, it would be picked first by every claim.
--
-- KEYS[1] the runner's queue `P:q:{runner}`, KEYS[2] `P:token` (fencing tokens), KEYS[3]
-- `P:lease`. The jobs' hashes `P:job:{id}` are named by the ids picked from the queue, so they
-- cannot be declared beforehand: they are built from the job key prefix `P:job:` (argument
-- `jobp`; Redis Cluster: see docs/redis.md, every key in one hash slot through the prefix's hash
-- tag).
-- ARGV is name/value pairs: `max` most jobs to pick, `until` reservation expiry (µs), `jobp`.
-- Returns {first fencing token, jobs picked, id1, version1, body1, id2, ...}, or {} when the
-- queue is empty (fewer picked than `max`: this pick emptied the queue, see hints.rs).
local queue, tokens, leases = KEYS[1], KEYS[2], KEYS[3]
local A = {}
for i = 1, #ARGV, 2 do A[ARGV[i]] = ARGV[i + 1] end
local max, reserve_until, job_prefix = tonumber(A.max), A['until'], A.jobp
-- Reads first: the queue (fails alone on a queue of another type), the lease set's type, the
-- jobs' hashes.
local picked = redis.call('ZRANGE', queue, 0, max - 1)
local n = #picked
if n == 0 then return {} end
local lt = redis.call('TYPE', leases)['ok']
if lt ~= 'zset' and lt ~= 'none' then
  return redis.error_reply('WRONGTYPE the lease set ' .. leases .. ' is a ' .. lt)
end
local out = { 0, n }
-- The reservations go in one ZADD (the pick is at most a worker's free slots).
local reserve = {}
for _, id in ipairs(picked) do
  local h = redis.pcall('HMGET', job_prefix .. id, 'v', 'b')
  if h.err then
    reserve[#reserve + 1] = reserve_until
    reserve[#reserve + 1] = id
    out[#out + 1] = id
    out[#out + 1] = '0'
    out[#out + 1] = '!' .. h.err
  elseif h[1] then
    reserve[#reserve + 1] = reserve_until
    reserve[#reserve + 1] = id
    out[#out + 1] = id
    out[#out + 1] = h[1]
    out[#out + 1] = h[2] or ''
  end
end
-- Then the writes, the only one that can still fail (`P:token` not a number) first.
local last = redis.call('INCRBY', tokens, n)
out[1] = last - n + 1
for i = 1, n, 4000 do
  redis.call('ZREM', queue, unpack(picked, i, math.min(i + 3999, n)))
end
for i = 1, #reserve, 4000 do
  redis.call('ZADD', leases, unpack(reserve, i, math.min(i + 3999, #reserve)))
end
return out
