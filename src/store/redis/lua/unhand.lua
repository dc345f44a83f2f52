-- Gives back a job handed over to a worker that withdrew before its process claimed it (see
-- src/store/redis/handover.rs): still QUEUED, it leaves the lease set (its claim reservation)
-- and goes back in its runner's queue (score: its queued_at), announced to every process (this
-- one too: no origin). A job no longer QUEUED (cancelled meanwhile) is left alone.
--
-- KEYS[1] `P:job:{id}`, KEYS[2] `P:lease`, KEYS[3] `P:q:{runner}`. ARGV[1] the job id, ARGV[2]
-- the notice channel. Returns 1 when given back, else 0.
local h = redis.call('HMGET', KEYS[1], 's', 'q', 'r')
if h[1] ~= 'QUEUED' then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], h[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], '\nQ ' .. h[3])
return 1
