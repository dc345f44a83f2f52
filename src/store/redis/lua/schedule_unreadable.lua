-- Deletes, or sets the wake time of, a cron schedule whose record this build cannot read (see
-- src/store/redis/schedules.rs): only if it is still the record read (its `v` unchanged).
--
-- KEYS[1] the schedule's key, KEYS[2] `P:sched:wake` (names by wake time), KEYS[3]
-- `P:sched:names` (every name).
-- ARGV[1] its `v` as read ('' = none, or the key is not a hash), ARGV[2] name, ARGV[3] '' =
-- delete, else the new wake time in µs.
-- Returns 1 when done, 0 when the key is gone or its version is another (nothing changed).
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then return 0 end
if t == 'hash' then
  local cur = redis.call('HGET', KEYS[1], 'v') or ''
  if cur ~= ARGV[1] then return 0 end
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
else
  redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[2])
end
return 1
