-- Takes a cron schedule whose record is gone out of the indexes it was left in (see
-- src/store/redis/schedules.rs): its hash deleted (a hand `DEL` of the key), or a hash without
-- `b` (a hand `HDEL`: `lua/schedule_cas.lua` never writes one), which is deleted too. Left in
-- `P:sched:wake`, it was due for ever and the fire loop met it every few milliseconds.
--
-- KEYS[1] the schedule's key, KEYS[2] `P:sched:wake`, KEYS[3] `P:sched:names`; ARGV[1] name.
-- Returns 1 when something was taken out, 0 when the key holds a record (a schedule created
-- meanwhile), is of another type, or nothing was left.
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'hash' then
  if redis.call('HEXISTS', KEYS[1], 'b') == 1 then return 0 end
elseif t ~= 'none' then
  return 0
end
local n = redis.call('DEL', KEYS[1])
n = n + redis.call('ZREM', KEYS[2], ARGV[1]) + redis.call('ZREM', KEYS[3], ARGV[1])
if n > 0 then return 1 end
return 0
