-- Takes a cron schedule whose hash is gone (a hand `DEL` of the key) out of the indexes it was
-- left in (see src/store/redis/schedules.rs): left in `P:sched:wake`, it was due for ever and the
-- fire loop met it every few milliseconds.
--
-- KEYS[1] the schedule's key, KEYS[2] `P:sched:wake`, KEYS[3] `P:sched:names`; ARGV[1] name.
-- Returns 1 when a name was taken out, 0 when the key exists (a schedule created meanwhile) or
-- the name was in neither set.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local n = redis.call('ZREM', KEYS[2], ARGV[1]) + redis.call('ZREM', KEYS[3], ARGV[1])
if n > 0 then return 1 end
return 0
