-- Deletes webhook deliveries that ended (delivered or given up) before a time, with their
-- attempt logs and job index entries (see src/store/redis/deliveries.rs).
--
-- ARGV[1] prefix, ARGV[2] before (µs), ARGV[3] most to delete.
-- Returns how many were deleted.
local P = ARGV[1]
local done = P .. ':dlv:done'
local ids = redis.call('ZRANGEBYSCORE', done, '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, n in ipairs(ids) do
  local k = P .. ':dlv:' .. n
  local job = redis.call('HGET', k, 'j')
  if job then redis.call('ZREM', P .. ':dlv:job:' .. job, n) end
  redis.call('DEL', k, P .. ':dlvlog:' .. n)
  redis.call('ZREM', done, n)
end
return #ids
