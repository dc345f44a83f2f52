-- Claims due webhook deliveries (see src/store/redis/deliveries.rs): each is held (its due time
-- moved to the end of the hold) under the claim's token, so one process at a time attempts it.
-- A delivery of an endpoint at its cap (attempts in flight in the claiming process) is passed
-- over and stays due: one slow receiver cannot take every slot.
-- The claim is its attempt's write-ahead record: field `a` holds the attempt started (JSON, made
-- by the caller), until `dlv_record.lua` replaces it with the attempt's answer. A delivery claimed
-- again with `a` still there lost its last claim without a record: that attempt goes into its
-- log first (the caller's JSON says "unknown"), counted.
--
-- KEYS[1] `P:dlv:due`. The deliveries' hashes are named by the numbers found there, so they
-- cannot be declared beforehand: ARGV[5] is their prefix `P:dlv:`, ARGV[8] that of their
-- attempt logs `P:dlvlog:` (Redis Cluster: see docs/redis.md, every key in one hash slot through
-- the prefix's hash tag).
-- ARGV[1] now (µs), ARGV[2] end of the hold (µs), ARGV[3] most to claim, ARGV[4] token,
-- ARGV[5] delivery key prefix, ARGV[6] most attempts in flight per endpoint, ARGV[7] most due
-- deliveries passed over, ARGV[8] attempt log key prefix, ARGV[9] the attempt started (JSON),
-- ARGV[10] attempts kept per log, then pairs: endpoint, attempts in flight. An endpoint is the
-- URL up to its query (`endpoint_part` in src/store/deliveries.rs).
-- Returns 8 values per claimed delivery: id, job id, url, event id, event JSON, created (µs),
-- attempts so far (the lost claim's included), next due ('' = created).
local due = KEYS[1]
local now, hold_until, max, token, dlv_prefix, cap, look_past =
  ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local log_prefix, started, keep = ARGV[8], ARGV[9], tonumber(ARGV[10])
local busy = {}
for i = 11, #ARGV - 1, 2 do busy[ARGV[i]] = tonumber(ARGV[i + 1]) end
local out = {}
local claimed, passed = 0, 0
while claimed < max and passed <= look_past do
  -- The due deliveries passed over stay first in the range (a claimed one moves to the end of
  -- its hold, a stale one leaves): the next ones start after them. Pages of at least 100, so
  -- that many passed over cost few range calls.
  local ids = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', passed,
    math.max(max - claimed, 100))
  if #ids == 0 then break end
  for _, n in ipairs(ids) do
    if claimed >= max or passed > look_past then break end
    local k = dlv_prefix .. n
    -- The URL alone first: a delivery passed over costs a short read, not its event.
    local u = redis.call('HGET', k, 'u')
    local used = 0
    if u then used = busy[string.match(u, '^[^?]*')] or 0 end
    if u and used >= cap then
      passed = passed + 1
    else
      local f = redis.call('HMGET', k, 'j', 'u', 'e', 'b', 't', 'st', 'n', 'due', 'c', 'a')
      if u and f[1] and f[6] == 'pending' then
        busy[string.match(u, '^[^?]*')] = used + 1
        local attempts = f[7] or '0'
        if f[9] and f[10] then
          -- The last claim's hold ran out without a record: its attempt is in the log.
          local lk = log_prefix .. n
          redis.call('RPUSH', lk, f[10])
          redis.call('LTRIM', lk, -keep, -1)
          attempts = tostring(redis.call('HINCRBY', k, 'n', 1))
        end
        redis.call('ZADD', due, hold_until, n)
        -- Its due time is the end of the hold (as in `P:dlv:due`), as a listing shows it.
        redis.call('HSET', k, 'c', token, 'a', started, 'due', hold_until)
        claimed = claimed + 1
        out[#out + 1] = n
        for i = 1, 5 do out[#out + 1] = f[i] end
        out[#out + 1] = attempts
        out[#out + 1] = f[8] or ''
      else
        redis.call('ZREM', due, n)
      end
    end
  end
end
return out
