-- Signal retention (see src/store/redis/signals.rs). Safe on every node at once.
--
-- KEYS[1] `P:sigkeys`. Each signal key's records and ids are named by what `P:sigkeys` holds,
-- so they cannot be declared beforehand: ARGV[3] is the records' prefix `P:sig:`, ARGV[4] the
-- ids' `P:sigid:` (Redis Cluster: see docs/redis.md, every key in one hash slot through the
-- prefix's hash tag).
-- ARGV[1] delete records before this time (µs), ARGV[2] keys examined at most, ARGV[5] the ids'
-- times' prefix `P:sigidt:`.
-- A key whose last record is older loses everything but its sequence counter; a key still in use
-- loses its older records and their client ids (an id is kept as long as its record, as on the
-- embedded store: a retry with it after that writes a new record). Ids written by builds before
-- `P:sigidt` stay until their key goes quiet.
-- Returns the number of records deleted.
local sigkeys = KEYS[1]
local before, max, sig_prefix, id_prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local idt_prefix = ARGV[5]
local n = 0
local quiet = redis.call('ZRANGEBYSCORE', sigkeys, '-inf', '(' .. before, 'LIMIT', 0, max)
for _, key in ipairs(quiet) do
  n = n + redis.call('ZCARD', sig_prefix .. key)
  redis.call('DEL', sig_prefix .. key, id_prefix .. key, idt_prefix .. key)
  redis.call('ZREM', sigkeys, key)
end
local busy = redis.call('ZRANGEBYSCORE', sigkeys, before, '+inf', 'LIMIT', 0, max)
for _, key in ipairs(busy) do
  n = n + redis.call('ZREMRANGEBYSCORE', sig_prefix .. key, '-inf', '(' .. before)
  forget_ids_before(id_prefix .. key, idt_prefix .. key, before)
end
return n
