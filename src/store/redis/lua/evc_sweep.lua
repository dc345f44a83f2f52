-- The retention sweep of channel streams `P:evc:{channel}` (written by nodes with
-- `store.channel_events = "stream"` and builds before session 18; see `sweep_old_streams` in
-- retention.rs, which runs `SCAN ... TYPE stream` between the calls). The nodes share one pass through the keyspace (a cycle): `P:evcsweep`, a hash:
-- `cursor` where the next segment of SCAN calls starts, `gen` the cycle's number, `start` (ms)
-- when it began, `found` 1 once it saw a stream, `run` the run id of its server. A cycle that saw none and took at most half the
-- channel TTL (less the clock margin) vouches that no stream exists: `P:evcgone`, a hash:
-- `since` (ms) the end of the first of the clean cycles in a row (a stream that expired did so
-- before it), `until` (ms) the start of the last one plus the TTL (less twice the margin), after
-- which the claim lapses (`events.lua` then counts from now again). Why that suffices: a stream
-- lives at least the TTL `events.lua` reads with (an expiring one, as for every channel key; one
-- without a TTL is deleted here only once idle that long), so any stream that existed after
-- `since` and before `until` was there for the whole of one of those cycles, and SCAN returns a
-- key present for a whole cycle: that cycle saw it. Seeing a stream deletes `P:evcgone` in the
-- same call (a stream writer came back, or the switch to lists is not over). SCAN's cursor means nothing
-- on another server: the cycle keeps the run id of the server it began on (`run`), and one that
-- finds another (Redis restarted, or a replica took over) counts as having seen a stream (the
-- keys before the cursor were not necessarily seen).
--
-- KEYS[1] `P:evcsweep`, KEYS[2] `P:evcgone`, KEYS[3..] (op `batch`) the streams a SCAN returned.
-- ARGV[1] the op:
-- - `begin`, ARGV[2] now (ms): the cycle to go on with, started at now when there is none (then
--   nothing is known of the time before: `P:evcgone` is deleted); a cycle that began on another
--   server (`run`) goes on marked as not clean. Returns {cursor, gen}.
-- - `batch`, ARGV[2] a time (ms): each stream without a TTL whose last id is older is deleted
--   (its events are older than what `events.lua` resyncs over for an absent stream); one with a
--   TTL is left to expire, one younger is left (a stream writer may still write to it
--   without refreshing its TTL). Every stream there counts as seen. Returns how many it deleted.
-- - `end`, ARGV[2..8] the cursor and gen the segment started from, the cursor it reached, now,
--   the TTL, the margin (ms): moves the cycle on when no other node did meanwhile (else returns
--   0: the segment is dropped, another node went through it); at the cycle's end (cursor 0)
--   writes or deletes `P:evcgone` and starts the next cycle. Returns 1 moved on, 2 a cycle ended
--   clean, 3 a cycle ended that saw a stream, took too long, or ran on more than one server.
local sweep, gone = KEYS[1], KEYS[2]
local op = ARGV[1]

-- The server's run id (`INFO server`), new at each start of a redis-server.
local function run_id()
  return string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''
end

-- The cycle's server: another one than the cycle began on marks it as not clean.
local function same_server(stored)
  local run = run_id()
  if stored == run then return true end
  redis.call('HSET', sweep, 'run', run, 'found', '1')
  return false
end

if op == 'begin' then
  -- (An unreleased build kept the cursor alone in a string here.)
  if redis.call('TYPE', sweep)['ok'] == 'string' then redis.call('DEL', sweep) end
  local s = redis.call('HMGET', sweep, 'cursor', 'gen', 'run')
  if not s[1] or not s[2] then
    redis.call('DEL', gone)
    redis.call('HSET', sweep, 'cursor', '0', 'gen', '1', 'start', ARGV[2], 'found', '0',
      'run', run_id())
    return { '0', '1' }
  end
  same_server(s[3])
  return { s[1], s[2] }
end

if op == 'batch' then
  local before = tonumber(ARGV[2])
  local seen, deleted = false, 0
  for i = 3, #KEYS do
    local k = KEYS[i]
    if redis.call('TYPE', k)['ok'] == 'stream' then
      seen = true
      if redis.call('PTTL', k) == -1 then
        local r = redis.call('XINFO', 'STREAM', k)
        local last
        for j = 1, #r, 2 do
          if r[j] == 'last-generated-id' then last = r[j + 1] end
        end
        local ms = last and tonumber(string.match(last, '^(%d+)-'))
        if ms and ms < before then
          redis.call('DEL', k)
          deleted = deleted + 1
        end
      end
    end
  end
  if seen then
    redis.call('DEL', gone)
    redis.call('HSET', sweep, 'found', '1')
  end
  return deleted
end

if op == 'end' then
  local from, gen, next = ARGV[2], ARGV[3], ARGV[4]
  local now, ttl, margin = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
  local s = redis.call('HMGET', sweep, 'cursor', 'gen', 'start', 'found', 'run')
  if s[1] ~= from or s[2] ~= gen then return 0 end
  if not same_server(s[5]) then s[4] = '1' end
  if next ~= '0' then
    redis.call('HSET', sweep, 'cursor', next)
    return 1
  end
  local start = tonumber(s[3]) or now
  local clean = s[4] == '0' and now - start <= ttl / 2 - margin
  if clean then
    redis.call('HSETNX', gone, 'since', string.format('%d', now + margin))
    redis.call('HSET', gone, 'until', string.format('%d', start + ttl - 2 * margin))
  else
    redis.call('DEL', gone)
  end
  redis.call('HSET', sweep, 'cursor', '0', 'gen', string.format('%d', tonumber(gen) + 1),
    'start', ARGV[5], 'found', '0')
  return clean and 2 or 3
end

return redis.error_reply('evc_sweep.lua: unknown op')
