-- Appends log lines to a job's log (a list of "seq|stream|ts|line" entries and a sequence
-- counter), keeping the newest `keep`. Nothing is written for a job that no longer exists, so a
-- late report cannot leave a log behind retention.
--
-- ARGV[1] prefix, ARGV[2] job id, ARGV[3] keep, ARGV[4..] "stream|ts|line".
-- Returns the last sequence number, or -1 when the job does not exist.
local P = ARGV[1]
local id = ARGV[2]
if redis.call('EXISTS', P .. ':job:' .. id) == 0 then return -1 end
local n = #ARGV - 3
local last = redis.call('INCRBY', P .. ':logn:' .. id, n)
local first = last - n + 1
local key = P .. ':log:' .. id
local batch = {}
for i = 4, #ARGV do
  batch[#batch + 1] = (first + i - 4) .. '|' .. ARGV[i]
  if #batch == 500 then
    redis.call('RPUSH', key, unpack(batch))
    batch = {}
  end
end
if #batch > 0 then redis.call('RPUSH', key, unpack(batch)) end
redis.call('LTRIM', key, -tonumber(ARGV[3]), -1)
return last
