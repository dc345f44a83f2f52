-- Reads events after `last_id` (exclusive) from the global stream or a channel, and says first
-- whether events after `last_id` are gone (a resync), never leaving a silent gap.
--
-- A channel's events are in its stream `P:evc:{channel}` (written by builds before the list,
-- and by nodes with `store.channel_events = "stream"`), or in its list `P:evl:{channel}`
-- (entries `<id> <event>`, oldest first, see `chan_push` in commit.lua; nodes with "list"), or
-- in both while writers of both kinds run or the other key lives on until it expires: both
-- are read and merged by id.
--
-- Resync rules (each gives an id; the greatest applies; events up to it may be missing):
-- - trimmed (a stream: MAXLEN at XADD, XTRIM at retention, when entries-added > length; a
--   list: its head is the marker `~`; trimming only ever removes the oldest entries, and
--   runyard never XDELs): every removed id is below the first kept one, so `last_id` below the
--   first kept id's predecessor may have missed some. The resync id is that predecessor:
--   reading on from it is gap-free. (A client whose `last_id` was itself the last removed entry
--   gets a resync it did not strictly need: safe, and rare.)
-- - a channel that expired (idle for the channel TTL): each of its two keys on its own, as
--   either may have expired while the other lived (an upgrade: the stream written by an older
--   build expires, the list lives on): a key that exists may have been created again, the
--   events of the expired one being older than its oldest kept entry minus the TTL; a key that
--   is absent may have expired, its events older than now minus the TTL (so a `last_id` older
--   than the TTL gets a resync, needless when that key never existed: safe); both absent: the
--   resync id is the global stream's last id, which every later event follows. For an absent
--   stream, "now" is the time since which no channel stream has existed when the retention
--   sweep vouches for it (`P:evcgone`, see `sweep_old_streams` in retention.rs): a stream
--   that expired did so before it, so its events are older than that time minus the TTL, and a
--   channel that only ever had a list gets no needless resync once the sweep has seen no stream
--   for a full cycle. For an absent list, the rule applies only once a list may have expired:
--   `P:evlsince` (ms, set with `SET NX` by the push that created the first list, see `append`
--   in commit.lua) exists and is at most now minus the TTL. Why that suffices: every list was
--   created at `since` or later, and lives at least the TTL this script is told after its last
--   event (`channel_ttl_read`: the TTL less the refresh slack, the same bound the other rules
--   use), so none expired before `since` plus the TTL; without `P:evlsince` no list ever
--   existed. Put another way: the rule's resync covers events up to `now` minus the TTL, and
--   the gate lets it off only when every event a list ever held is after that (at `since` or
--   later), events its resync would not cover anyway; so the gate adds no exposure of its own,
--   also to a `now` behind Redis's clock (which the TTL's slack allows for, as for every rule
--   here). So a deployment that writes streams (the default) gives no resync for a list it
--   never had: a reader behind by more than the TTL in a channel whose live stream holds its
--   events reads them, as builds before the list did (the absent list's rule fired there
--   otherwise, and on a read from the oldest kept skipped the stream's entries older than the
--   TTL). `P:evlsince` must stay (no DEL, no eviction: runyard needs `noeviction`, see
--   docs/redis.md): deleted, the next list created sets it later, and a list that expired
--   before could be missed. It is never cleared: after a switch back to streams the rule keeps
--   applying (a resync for a reader behind by more than the TTL: safe).
-- The events returned are those after `last_id` and after the resync id. A channel read from
-- the oldest kept (`last_id` '') applies the same rules as a read from the very beginning
-- (`last_id` 0) and starts after the greatest of their ids and the trimmed keys' cuts, without
-- a resync (the client asked from the oldest kept): what one key kept before events that the
-- other key lost (trimmed, or expired) is not returned, so the read has no gap in the middle.
--
-- KEYS[1] the stream read (`P:ev`, or `P:evc:{channel}`), KEYS[2] the global stream `P:ev`,
-- KEYS[3] (channel reads) the channel's list `P:evl:{channel}`, KEYS[4] (channel reads)
-- `P:evcgone`, a hash: `since` (ms) no channel stream has existed since then, as far as the
-- sweep saw, a bound it vouches for until `until` (ms), KEYS[5] (channel reads) `P:evlsince`.
-- ARGV is name/value pairs: `chan` 1 for a channel, 0 for the global stream, `last` last id
-- ('' = from the oldest kept), `limit`, `now` (ms), `ttl` the channel TTL (ms).
-- Returns {resync id or '', id1, event1, id2, event2, ...}.
local key, global, lkey, gone, lsince = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local A = {}
for i = 1, #ARGV, 2 do A[ARGV[i]] = ARGV[i + 1] end
local is_chan = A.chan == '1'
local last = A.last
local limit = tonumber(A.limit)
local now = tonumber(A.now)
local ttl = tonumber(A.ttl)

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
-- The id just before `id`.
local function pred(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if seq ~= '0' then return ms .. '-' .. (tonumber(seq) - 1) end
  return (tonumber(ms) - 1) .. '-18446744073709551615'
end
local function info(k)
  local r = redis.call('XINFO', 'STREAM', k)
  local t = {}
  for i = 1, #r, 2 do t[r[i]] = r[i + 1] end
  return t
end
-- The id of a list entry (nil for the marker).
local function id_of(e)
  return string.match(e, '^(%d+%-%d+) ')
end

-- The sequence of a resync id the absent-key rule gives (2^53 - 1: exact in Lua's numbers, and
-- above any real id's sequence).
local ABSENT = '9007199254740991'
-- A list this short is read whole at once (one command); a longer one is read from its tail
-- (`TAIL` entries: a long poll reads the newest few), else searched by index.
local SMALL = 8
local TAIL = 8
-- The channel's list: its length `n`, `off` 1 when its head is the marker (else 0), `first`
-- the oldest kept entry's id, `all` its elements when it is short.
local L
if is_chan and lkey then
  local n = redis.call('LLEN', lkey)
  if n > 0 then
    local all = n <= SMALL and redis.call('LRANGE', lkey, 0, -1) or nil
    local head = all and all[1] or redis.call('LINDEX', lkey, 0)
    local off = head == '~' and 1 or 0
    local fe = head
    if off == 1 then fe = all and all[2] or redis.call('LINDEX', lkey, 1) end
    L = { n = n, off = off, first = fe and id_of(fe), all = all }
  end
end
local has_stream = redis.call('EXISTS', key) == 1

-- The time the absent-stream rule counts from: now, or the time since which the sweep saw no
-- channel stream while it vouches for it (an earlier `since` than now: a stream absent now that
-- expired did so before `since`).
-- Read once, only when the absent-stream rule needs it (a stream-mode channel read, whose stream
-- exists, never does).
local sgone
local function stream_gone_at()
  if sgone == nil then
    sgone = now
    if is_chan and gone then
      local g = redis.call('HMGET', gone, 'since', 'until')
      local since, till = tonumber(g[1]), tonumber(g[2])
      if since and till and now < till and since < now then sgone = since end
    end
  end
  return sgone
end

-- Whether a list may have expired (read once, only when a rule needs it): see the header.
local lists_expired
local function list_may_have_expired()
  if lists_expired == nil then
    local t = tonumber(lsince and redis.call('GET', lsince) or '')
    lists_expired = t ~= nil and t <= now - ttl
  end
  return lists_expired
end

local resync = ''
local function raise(id)
  if resync == '' or less(resync, id) then resync = id end
end
-- Each trimmed key's cut: the predecessor of its oldest kept entry (events up to it may be
-- gone), or, for an emptied stream, its last id. `sfirst`: the stream's oldest kept entry.
local cuts, sfirst = {}, nil
if has_stream then
  local t = info(key)
  local f = t['first-entry']
  if f and f[1] then sfirst = f[1] end
  if tonumber(t['entries-added']) > tonumber(t['length']) then
    cuts[#cuts + 1] = sfirst and pred(sfirst) or t['last-generated-id']
  end
end
if L and L.first and L.off == 1 then cuts[#cuts + 1] = pred(L.first) end

-- The expiry rules of a channel for a reader at `lms` (ms): each id that applies goes to `hit`.
-- The stream and the list each on its own (either may have expired while the other lived): a
-- key that exists and whose oldest entry is `first` may have expired before it was created
-- again, holding only events older than `first` minus the TTL; a key that is absent may have
-- expired (`may`: a list only once one may have, see `P:evlsince` in the header), holding only
-- events older than `at` (now, or `sgone` for the stream) minus the TTL.
-- The resync id of that last rule has the sequence ABSENT: a reader reading on from it (`last`
-- with that sequence) read when the absent key was already absent, so its events are older
-- than `last`, and a later incarnation's are after `last` plus the TTL: the rule then applies
-- only to a `last` older than `at` minus twice the TTL (else every read from that id would
-- resync again, a long poll's loop).
local function expiry_rules(lms, span, hit)
  -- Both keys absent: the "both absent" rule below alone, as builds before the list read (the
  -- global stream's last id; an ABSENT id here would resync where they did not).
  if not has_stream and not L then return end
  local function expiry(present, first, at_of, may)
    if present then
      if first then
        local fms = parse(first)
        if lms < fms - ttl then hit((fms - ttl) .. '-0') end
      end
    else
      local at = at_of()
      if lms < at - span and may() then hit((at - ttl) .. '-' .. ABSENT) end
    end
  end
  expiry(has_stream, sfirst, stream_gone_at, function() return true end)
  expiry(L ~= nil, L and L.first, function() return now end, list_may_have_expired)
end

if last ~= '' then
  local lms = parse(last)
  for _, c in ipairs(cuts) do
    if less(last, c) then raise(c) end
  end
  if is_chan then
    local span = string.match(last, '%-(%d+)$') == ABSENT and 2 * ttl or ttl
    expiry_rules(lms, span, raise)
    -- Both absent: every later event of the channel follows the global stream's last id.
    if not has_stream and not L and lms < now - ttl and redis.call('EXISTS', global) == 1 then
      local g = info(global)['last-generated-id']
      if g and less(last, g) then raise(g) end
    end
  end
end

-- Everything returned is after `from`. A channel read from the oldest kept ('') starts after
-- the greatest cut and the greatest id the expiry rules give a read from the very beginning:
-- what a key kept before another key's lost events is not returned (the client asked from the
-- oldest kept, so no resync is due), and the read is gap-free.
local from = last
if resync ~= '' and (from == '' or less(from, resync)) then from = resync end
if last == '' and is_chan then
  local function after(id)
    if from == '' or less(from, id) then from = id end
  end
  for _, c in ipairs(cuts) do after(c) end
  expiry_rules(0, ttl, after)
end

-- The stream's entries after `from`: ids and events.
local sid, sev = {}, {}
if has_stream then
  local entries
  if from == '' then
    entries = redis.call('XRANGE', key, '-', '+', 'COUNT', limit)
  else
    entries = redis.call('XRANGE', key, '(' .. from, '+', 'COUNT', limit)
  end
  for _, e in ipairs(entries) do
    local f = e[2]
    for i = 1, #f, 2 do
      if f[i] == 'e' then
        sid[#sid + 1] = e[1]
        sev[#sev + 1] = f[i + 1]
      end
    end
  end
end

-- The list's entries after `from` (at most `limit`), oldest first: ids `lid`, events `lev`.
-- `from` is parsed once, each entry's id once.
local fms, fseq
if from ~= '' then fms, fseq = parse(from) end
-- The id of list entry `e` when it is after `from` (else nil: the marker too).
local function after_from(e)
  local id, ms, seq = string.match(e, '^((%d+)%-(%d+)) ')
  if not id or not fms then return id end
  ms, seq = tonumber(ms), tonumber(seq)
  if ms > fms or (ms == fms and seq > fseq) then return id end
end
local lid, lev = {}, {}
-- Takes the entries of `items` (from index `i0`) after `from`: once one is, every later one is
-- (ids increase along the list), so only the ids before it are compared.
local function take(items, i0)
  local past = not fms
  for i = i0, #items do
    local e = items[i]
    local sp = string.find(e, ' ', 1, true)
    if sp and (past or after_from(e)) then
      past = true
      lid[#lid + 1] = string.sub(e, 1, sp - 1)
      lev[#lev + 1] = string.sub(e, sp + 1)
      if #lid >= limit then break end
    end
  end
end
if L then
  if L.all then
    take(L.all, 1)
  elseif fms and not after_from(redis.call('LINDEX', lkey, -1) or '') then
    -- Nothing after `from` (an up-to-date poll): one command.
  else
    -- The newest `TAIL` entries (never the marker): when `from` falls among them (a woken long
    -- poll), they hold the answer; else the first index after `from`, searched.
    local k = math.min(TAIL, L.n - L.off)
    local tail = fms and redis.call('LRANGE', lkey, -k, -1) or {}
    local i = #tail
    while i >= 1 and after_from(tail[i]) do i = i - 1 end
    if fms and (i >= 1 or k == L.n - L.off) then
      take(tail, i + 1)
    else
      local lo, hi = L.off, L.n
      if fms then
        while lo < hi do
          local mid = math.floor((lo + hi) / 2)
          if after_from(redis.call('LINDEX', lkey, mid) or '') then hi = mid else lo = mid + 1 end
        end
      end
      if lo < L.n then take(redis.call('LRANGE', lkey, lo, lo + limit - 1), 1) end
    end
  end
end

-- A cursor past the newest id the global stream ever gave (every event's id is one of it, and
-- a client gets an id only once it is stored; one Redis, no replica to be ahead of): from
-- another database (a flushed or new Redis, another deployment). A resync to that newest id
-- (`0-0` when there is none), or the client would wait until ids pass its cursor. Not for a
-- cursor with the sequence ABSENT: a resync id of the expiry rules, which may be after every
-- event (a channel idle for the TTL), and reads on from there.
if last ~= '' and resync == '' and #sid == 0 and #lid == 0
    and string.match(last, '%-(%d+)$') ~= ABSENT then
  local top = '0-0'
  if redis.call('EXISTS', global) == 1 then top = info(global)['last-generated-id'] end
  -- The channel's own newest too (its stream's, its list's tail): a global stream deleted or
  -- cut behind runyard's back (an operator's DEL) does not make a current cursor foreign.
  -- Read only then: an up-to-date poll pays nothing more.
  if less(top, last) and is_chan and has_stream then
    local t = info(key)['last-generated-id']
    if less(top, t) then top = t end
  end
  if less(top, last) and L then
    local t = id_of(redis.call('LINDEX', lkey, -1) or '')
    if t and less(top, t) then top = t end
  end
  if less(top, last) then resync = top end
end

-- Both merged by id, at most `limit` (an id in both, which no writer makes, once).
local out = { resync }
local i, j = 1, 1
for _ = 1, limit do
  local sid_i, lid_j = sid[i], lid[j]
  if not sid_i and not lid_j then break end
  if sid_i and (not lid_j or not less(lid_j, sid_i)) then
    out[#out + 1] = sid_i
    out[#out + 1] = sev[i]
    i = i + 1
    if lid_j == sid_i then j = j + 1 end
  else
    out[#out + 1] = lid_j
    out[#out + 1] = lev[j]
    j = j + 1
  end
end
return out
