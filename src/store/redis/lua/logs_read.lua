-- Reads log lines with a sequence number after `after`, at most `limit`.
-- KEYS[1] the job's sequence counter `P:logn:{id}`, KEYS[2] its lines `P:log:{id}`.
-- ARGV[1] after, ARGV[2] limit. Returns the entries.
local counter, key = KEYS[1], KEYS[2]
local after = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local last = tonumber(redis.call('GET', counter) or '0')
local len = redis.call('LLEN', key)
if len == 0 then return {} end
local first = last - len + 1
local from = math.max(after + 1, first)
if from > last then return {} end
local start = from - first
return redis.call('LRANGE', key, start, start + limit - 1)
