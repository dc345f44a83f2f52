-- Claims due webhook deliveries (see src/store/redis/deliveries.rs): each is held (its due time
-- moved to the end of the hold) under the claim's token, so one process at a time attempts it.
-- Deliveries are claimed oldest due first among the endpoints below their cap (attempts in
-- flight in the claiming process): the claim walks the endpoints by their earliest due delivery
-- (`P:dlv:eps`), skipping those at their cap, and takes the first due delivery of the first one
-- with room, again and again. An endpoint at its cap costs one entry passed over per step
-- however many deliveries it has due: one slow receiver's backlog, of any depth, delays no other
-- receiver's deliveries, which stay due until their endpoint has room.
-- The claim is its attempt's write-ahead record: field `a` holds the attempt started (JSON, made
-- by the caller), until `dlv_record.lua` replaces it with the attempt's answer. A delivery claimed
-- again with `a` still there lost its last claim without a record: that attempt goes into its
-- log first (the caller's JSON says "unknown"), counted.
-- First, up to ARGV[11] deliveries of the earlier layout (`P:dlv:due` alone, written before an
-- upgrade or by an older process beside this one) move to this one, due as they were; one
-- claimed meanwhile (by this build: an older process's record of a retry put it back in
-- `P:dlv:due` after this build moved it) keeps its claim's hold, not an earlier due, so no other
-- claim takes it while its attempt is in flight.
-- Endpoints are named by their id, the SHA-1 hex of the URL up to its query (`endpoint_id` in
-- src/store/redis/deliveries.rs), in key names and in `P:dlv:eps` alike: a webhook's path may be
-- its secret.
--
-- KEYS[1] `P:dlv:pend` (every pending delivery by due time), KEYS[2] `P:dlv:eps` (endpoints by
-- their earliest due delivery), KEYS[3] `P:dlv:due` (the earlier layout), KEYS[4] `P:dlv:done`
-- (ended deliveries: only checked here, `dlv_record.lua` writes it). The deliveries' hashes
-- and the endpoints' sets are named by what is found there, so they cannot be declared
-- beforehand: ARGV[5] is the prefix of the hashes `P:dlv:`, ARGV[7] that of an endpoint's
-- pending deliveries `P:dlv:ep:`, ARGV[8] that of the attempt logs `P:dlvlog:` (Redis Cluster:
-- see docs/redis.md, every key in one hash slot through the prefix's hash tag).
-- ARGV[1] now (µs), ARGV[2] end of the hold (µs), ARGV[3] most to claim, ARGV[4] token,
-- ARGV[5] delivery key prefix, ARGV[6] most attempts in flight per endpoint, ARGV[7] endpoint
-- set prefix, ARGV[8] attempt log key prefix, ARGV[9] the attempt started (JSON), ARGV[10]
-- attempts kept per log, ARGV[11] most deliveries of the earlier layout moved, then pairs:
-- endpoint id, attempts in flight. An endpoint is the URL up to its query (`endpoint_part` in
-- src/store/deliveries.rs).
-- A key of the wrong type (an operator's mistake, another program sharing the Redis; checked with
-- `TYPE` before it is written or read) costs its own delivery or endpoint only, and is met once:
-- a delivery whose hash is not a hash, or whose attempt log is not a list (or whose attempt count
-- is not a number), is taken out of the pending sets (`pend`, its endpoint's, the earlier
-- layout's) and left as it is; an endpoint whose pending set is not a sorted set is taken out of
-- `eps` (its deliveries stay in `pend`, counted, and are not attempted: that set listed them).
-- Each is named in the reply (the caller logs it) and every other delivery is claimed as ever.
-- `pend`, `eps`, `P:dlv:due` or `P:dlv:done` of the wrong type is shared by every delivery: the
-- claim fails naming it, having written nothing. `done` is checked although the claim does not
-- use it: every record of an ended attempt writes it and would fail, after its request went out,
-- and the delivery be sent again at each hold's end, forever.
-- Returns the number of keys passed, a line per key passed ('<key> is a <type>'), then 8 values
-- per claimed delivery: id, job id, url, event id, event JSON, created (µs), attempts so far (the
-- lost claim's included), next due ('' = created).
local pend, eps, old, done = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, hold_until, max, token, dlv_prefix, cap, ep_prefix =
  ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
local log_prefix, started, keep, move = ARGV[8], ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11])
local busy, full, passed = {}, 0, {}

-- Why `key` cannot be used as a `want` ('<key> is a <type>'), nil when it can (or is missing).
local function bad_type(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= want and t ~= 'none' then return key .. ' is a ' .. t end
end

for _, k in ipairs({pend, eps, old, done}) do
  local b = bad_type(k, 'zset')
  if b then return redis.error_reply('WRONGTYPE ' .. b .. ', not a sorted set') end
end
for i = 12, #ARGV - 1, 2 do
  local n = tonumber(ARGV[i + 1])
  busy[ARGV[i]] = n
  if n >= cap then full = full + 1 end
end

-- The endpoint's entry in `eps`: the due time of its first delivery, none without any.
local function refresh(ep)
  local f = redis.call('ZRANGE', ep_prefix .. ep, 0, 0, 'WITHSCORES')
  if f[1] then redis.call('ZADD', eps, f[2], ep) else redis.call('ZREM', eps, ep) end
end

-- The earlier layout's deliveries, moved (pending ones) or dropped (ended or trimmed).
if move > 0 then
  local o = redis.call('ZRANGE', old, 0, move - 1, 'WITHSCORES')
  for i = 1, #o, 2 do
    local n, at = o[i], o[i + 1]
    local b = bad_type(dlv_prefix .. n, 'hash')
    local f = b and {} or redis.call('HMGET', dlv_prefix .. n, 'u', 'st', 'c', 'due')
    if f[1] and f[2] == 'pending' then
      local ep = redis.sha1hex(string.match(f[1], '^[^?]*'))
      b = bad_type(ep_prefix .. ep, 'zset')
      if not b then
        -- Claimed: due at the end of its hold at the earliest.
        if f[3] and f[4] and tonumber(f[4]) and tonumber(f[4]) > tonumber(at) then at = f[4] end
        redis.call('ZADD', pend, at, n)
        redis.call('ZADD', ep_prefix .. ep, at, n)
        refresh(ep)
      end
    end
    if b then passed[#passed + 1] = b end
    redis.call('ZREM', old, n)
  end
end

-- The first endpoint due with room: past at most the endpoints at their cap, and past (taken out
-- of `eps`) those whose pending set is of the wrong type.
local function first_with_room()
  while true do
    local dropped = false
    for _, e in ipairs(redis.call('ZRANGEBYSCORE', eps, '-inf', now, 'LIMIT', 0, full + 1)) do
      if (busy[e] or 0) < cap then
        local b = bad_type(ep_prefix .. e, 'zset')
        if not b then return e end
        passed[#passed + 1] = b
        redis.call('ZREM', eps, e)
        dropped = true
      end
    end
    if not dropped then return nil end
  end
end

local out = {}
local claimed = 0
while claimed < max do
  local ep = first_with_room()
  if not ep then break end
  local ek = ep_prefix .. ep
  local n = redis.call('ZRANGEBYSCORE', ek, '-inf', now, 'LIMIT', 0, 1)[1]
  if n then
    local k = dlv_prefix .. n
    local b = bad_type(k, 'hash') or bad_type(log_prefix .. n, 'list')
    local f = b and {} or redis.call('HMGET', k, 'j', 'u', 'e', 'b', 't', 'st', 'n', 'due', 'c', 'a')
    if f[7] and not string.match(f[7], '^%d+$') then b = 'field n of ' .. k .. ' is not a number' end
    if b then
      -- Passed, named, and met no more.
      passed[#passed + 1] = b
      redis.call('ZREM', pend, n)
      redis.call('ZREM', ek, n)
    elseif f[1] and f[2] and f[6] == 'pending' then
      local used = (busy[ep] or 0) + 1
      busy[ep] = used
      if used >= cap then full = full + 1 end
      local attempts = f[7] or '0'
      if f[9] and f[10] then
        -- The last claim's hold ran out without a record: its attempt is in the log.
        local lk = log_prefix .. n
        redis.call('RPUSH', lk, f[10])
        redis.call('LTRIM', lk, -keep, -1)
        attempts = tostring(redis.call('HINCRBY', k, 'n', 1))
      end
      redis.call('ZADD', pend, hold_until, n)
      redis.call('ZADD', ek, hold_until, n)
      -- Its due time is the end of the hold (as in `P:dlv:pend`), as a listing shows it.
      redis.call('HSET', k, 'c', token, 'a', started, 'due', hold_until)
      claimed = claimed + 1
      out[#out + 1] = n
      for i = 1, 5 do out[#out + 1] = f[i] end
      out[#out + 1] = attempts
      out[#out + 1] = f[8] or ''
    else
      -- Ended or trimmed meanwhile: no longer pending.
      redis.call('ZREM', pend, n)
      redis.call('ZREM', ek, n)
    end
  end
  -- Its entry follows its first delivery (later now, or gone): the walk moves on.
  refresh(ep)
end
local reply = {tostring(#passed)}
for _, b in ipairs(passed) do reply[#reply + 1] = b end
for _, v in ipairs(out) do reply[#reply + 1] = v end
return reply
