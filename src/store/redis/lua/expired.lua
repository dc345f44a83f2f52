-- The reaper's view of the lease set: entries whose expiry passed.
-- - a claim reservation whose job is still QUEUED (its claimer died before saving the claim)
--   goes back to the runner's queue, at its old place;
-- - an active job (STARTING/RUNNING) is returned: its lease expired, the reaper decides in Rust;
-- - anything else is a stale entry and is dropped.
-- Safe on every node at once: each step is atomic and idempotent.
--
-- ARGV[1] prefix, ARGV[2] now (µs), ARGV[3] max. Returns {version1, body1, ...}.
local P = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', P .. ':lease', '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local h = redis.call('HMGET', P .. ':job:' .. id, 's', 'r', 'q', 'v', 'b')
  local st = h[1]
  if st == 'STARTING' or st == 'RUNNING' then
    out[#out + 1] = h[4]
    out[#out + 1] = h[5]
  else
    redis.call('ZREM', P .. ':lease', id)
    if st == 'QUEUED' then
      redis.call('ZADD', P .. ':q:' .. h[2], h[3], id)
    end
  end
end
return out
