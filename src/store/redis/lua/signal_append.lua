-- Appends a readiness signal (see src/store/redis/signals.rs).
--
-- KEYS[1] `P:sig:{key}` records by time (score µs, member the record JSON), KEYS[2]
-- `P:sigid:{key}` client id -> record JSON, KEYS[3] `P:sigseq` key -> last sequence number,
-- KEYS[4] `P:sigkeys` key -> time of its last record, KEYS[5] `P:waitk:{key}` the jobs waiting
-- on the key, KEYS[6] `P:waitdue` jobs to check, KEYS[7] `P:waitgen` check generations,
-- KEYS[8] the notice channel (see commit.lua for the waiting keys), KEYS[9] `P:sigidt:{key}` the
-- client ids by the time of their record (so that an id is forgotten with its record: by the cap
-- here, by retention in signal_trim.lua).
-- ARGV[1] key, ARGV[2] the key as a JSON string, ARGV[3] client id ('' = none), ARGV[4] the id as
-- JSON, ARGV[5] the writer's time (µs; the record's may be later, see `stamp` in sig_ids.lua),
-- ARGV[6] payload JSON ('' = none), ARGV[7] records kept per key.
-- Returns {1, record} when written, {0, earlier record} for an id already used.
if ARGV[3] ~= '' then
  local found = redis.call('HGET', KEYS[2], ARGV[3])
  if found then return {0, found} end
end
local at = stamp(KEYS[1], ARGV[5])
local seq = redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
local payload = ARGV[6]
if payload == '' then payload = 'null' end
local id = 'null'
if ARGV[3] ~= '' then id = ARGV[4] end
local rec = '{"key":' .. ARGV[2] .. ',"seq":' .. seq .. ',"at":' .. at .. ',"id":' .. id ..
  ',"payload":' .. payload .. '}'
redis.call('ZADD', KEYS[1], at, rec)
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[3], rec)
  redis.call('ZADD', KEYS[9], at, ARGV[3])
end
local keep = tonumber(ARGV[7])
if redis.call('ZCARD', KEYS[1]) > keep then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(keep + 1))
  forget_cut_ids(KEYS[1], KEYS[2], KEYS[9])
end
redis.call('ZADD', KEYS[4], at, ARGV[1])
local waiting = redis.call('SMEMBERS', KEYS[5])
for _, wid in ipairs(waiting) do
  redis.call('ZADD', KEYS[6], redis.call('INCR', KEYS[7]), wid)
end
if #waiting > 0 then
  redis.call('PUBLISH', KEYS[8], '\nC 00000000-0000-0000-0000-000000000000 WAITING')
end
return {1, rec}
