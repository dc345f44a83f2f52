-- Appends log lines to a job's log (a list of "seq|stream|ts|line" entries and a sequence
-- counter), keeping the newest `keep`. Nothing is written for a job that no longer exists, so a
-- late report cannot leave a log behind retention.
--
-- KEYS[1] the job `P:job:{id}`, KEYS[2] its sequence counter `P:logn:{id}`, KEYS[3] its lines
-- `P:log:{id}`. ARGV[1] keep, ARGV[2..] "stream|ts|line".
-- Returns the last sequence number, or -1 when the job does not exist.
local job, counter, key = KEYS[1], KEYS[2], KEYS[3]
local keep = tonumber(ARGV[1])
if redis.call('EXISTS', job) == 0 then return -1 end
local n = #ARGV - 1
local last = redis.call('INCRBY', counter, n)
local first = last - n + 1
local batch = {}
for i = 2, #ARGV do
  batch[#batch + 1] = (first + i - 2) .. '|' .. ARGV[i]
  if #batch == 500 then
    redis.call('RPUSH', key, unpack(batch))
    batch = {}
  end
end
if #batch > 0 then redis.call('RPUSH', key, unpack(batch)) end
redis.call('LTRIM', key, -keep, -1)
return last
