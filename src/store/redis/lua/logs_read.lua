-- Reads log lines with a sequence number after `after`, at most `limit`.
-- ARGV[1] prefix, ARGV[2] job id, ARGV[3] after, ARGV[4] limit. Returns the entries.
local P = ARGV[1]
local id = ARGV[2]
local last = tonumber(redis.call('GET', P .. ':logn:' .. id) or '0')
local key = P .. ':log:' .. id
local len = redis.call('LLEN', key)
if len == 0 then return {} end
local first = last - len + 1
local from = math.max(tonumber(ARGV[3]) + 1, first)
if from > last then return {} end
local start = from - first
return redis.call('LRANGE', key, start, start + tonumber(ARGV[4]) - 1)
