-- Compare-and-set of one cron schedule (see src/store/redis/schedules.rs).
--
-- KEYS[1] the schedule's hash (`v` version, `b` record JSON), KEYS[2] `P:sched:wake` (names by
-- wake time), KEYS[3] `P:sched:names` (every name).
-- ARGV[1] expected version ('' = the schedule must not exist), ARGV[2] name, ARGV[3] new version,
-- ARGV[4] record JSON ('' = delete), ARGV[5] wake time in µs ('' = none).
-- Returns 1 when written, 0 when the stored version is another (nothing changed).
local cur = redis.call('HGET', KEYS[1], 'v')
if ARGV[1] == '' then
  if cur then return 0 end
elseif cur ~= ARGV[1] then
  return 0
end
if ARGV[4] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
  return 1
end
redis.call('HSET', KEYS[1], 'v', ARGV[3], 'b', ARGV[4])
if ARGV[5] == '' then
  redis.call('ZREM', KEYS[2], ARGV[2])
else
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[2])
end
redis.call('ZADD', KEYS[3], 0, ARGV[2])
return 1
