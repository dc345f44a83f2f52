-- Picks the oldest QUEUED jobs of a runner for a claim. The ids move from the runner's queue
-- into the lease set with a short reservation expiry in this same script, so a worker that dies
-- before it saves its claims loses nothing: the reaper (expired.lua) puts reservations whose job
-- is still QUEUED back in the queue. The claim itself (QUEUED -> STARTING, fencing token, lease)
-- is applied in Rust and saved with commit.lua, which replaces the reservation by the lease.
--
-- ARGV[1] prefix, ARGV[2] runner, ARGV[3] max, ARGV[4] reservation expiry (µs).
-- Returns {first fencing token, id1, version1, body1, id2, ...}, or {} when the queue is empty.
local P = ARGV[1]
local picked = redis.call('ZPOPMIN', P .. ':q:' .. ARGV[2], tonumber(ARGV[3]))
if #picked == 0 then return {} end
local n = #picked / 2
local last = redis.call('INCRBY', P .. ':token', n)
local out = { last - n + 1 }
for i = 1, #picked, 2 do
  local id = picked[i]
  local h = redis.call('HMGET', P .. ':job:' .. id, 'v', 'b')
  if h[1] then
    redis.call('ZADD', P .. ':lease', ARGV[4], id)
    out[#out + 1] = id
    out[#out + 1] = h[1]
    out[#out + 1] = h[2]
  end
end
return out
