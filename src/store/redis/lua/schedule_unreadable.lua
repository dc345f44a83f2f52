-- Deletes, or sets the wake time of, a cron schedule whose record this build cannot read (see
-- src/store/redis/schedules.rs): only if it is still the record read, `v` and `b` both unchanged
-- (a hand fix that kept `v`, or a delete and a new schedule with the same `v` in between, is
-- left alone), and a new wake time only if the schedule is still due (a newer build that reads
-- the record may have planned it meanwhile: its plan stands).
--
-- KEYS[1] the schedule's key, KEYS[2] `P:sched:wake` (names by wake time), KEYS[3]
-- `P:sched:names` (every name).
-- ARGV[1] its `v` as read ('' = none), ARGV[2] name, ARGV[3] '' = delete, else the new wake
-- time in µs, ARGV[4] its `b` as read (bytes), ARGV[5] '1' when it was read as a hash, '' when
-- its key was not a hash, ARGV[6] (a new wake time) the latest wake time (µs) at which it is
-- still due.
-- Returns 1 when done, 0 when the key is gone or is another record, or is no longer due
-- (nothing changed).
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then return 0 end
if (t == 'hash') ~= (ARGV[5] == '1') then return 0 end
if t == 'hash' then
  local cur = redis.call('HMGET', KEYS[1], 'v', 'b')
  if (cur[1] or '') ~= ARGV[1] or cur[2] ~= ARGV[4] then return 0 end
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
else
  local w = redis.call('ZSCORE', KEYS[2], ARGV[2])
  if not w or tonumber(w) > tonumber(ARGV[6]) then return 0 end
  redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[2])
end
return 1
