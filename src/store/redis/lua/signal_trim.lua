-- Signal retention (see src/store/redis/signals.rs). Safe on every node at once.
--
-- ARGV[1] prefix, ARGV[2] delete records before this time (µs), ARGV[3] keys examined at most.
-- A key whose last record is older loses everything but its sequence counter; a key still in use
-- loses its older records (its ids are kept until the key goes quiet, so a late retry with a
-- known id still returns its record).
-- Returns the number of records deleted.
local P = ARGV[1]
local n = 0
local quiet = redis.call('ZRANGEBYSCORE', P .. ':sigkeys', '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, key in ipairs(quiet) do
  n = n + redis.call('ZCARD', P .. ':sig:' .. key)
  redis.call('DEL', P .. ':sig:' .. key, P .. ':sigid:' .. key)
  redis.call('ZREM', P .. ':sigkeys', key)
end
local busy = redis.call('ZRANGEBYSCORE', P .. ':sigkeys', ARGV[2], '+inf', 'LIMIT', 0, tonumber(ARGV[3]))
for _, key in ipairs(busy) do
  n = n + redis.call('ZREMRANGEBYSCORE', P .. ':sig:' .. key, '-inf', '(' .. ARGV[2])
end
return n
