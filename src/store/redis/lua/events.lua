-- Reads events after `last_id` (exclusive) from the global or a channel stream, and says first
-- whether events after `last_id` are gone (a resync), never leaving a silent gap:
-- - trimmed (MAXLEN at XADD, XTRIM at retention; trimming only ever removes the oldest entries,
--   and runyard never XDELs): when the stream lost entries (entries-added > length), every
--   removed id is below the first kept one, so `last_id` below the first kept id's predecessor
--   may have missed some. The resync id is that predecessor: reading on from it is gap-free.
--   (A client whose `last_id` was itself the last removed entry gets a resync it did not
--   strictly need: safe, and rare.)
-- - a channel stream that expired (idle for the channel TTL) and was created again: events of
--   the old stream are older than the new first entry minus the TTL;
-- - a channel stream that expired and is absent: `last_id` older than now minus the TTL (the
--   resync id is then the global stream's last id, which every later event follows).
--
-- KEYS[1] the stream read (`P:ev`, or `P:evc:{channel}`), KEYS[2] the global stream `P:ev`.
-- ARGV is name/value pairs: `chan` 1 for a channel stream, 0 for the global one, `last` last id
-- ('' = from the oldest kept), `limit`, `now` (ms), `ttl` the channel TTL (ms).
-- Returns {resync id or '', id1, event1, id2, event2, ...}.
local key, global = KEYS[1], KEYS[2]
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

local resync = ''
if last ~= '' then
  local lms = parse(last)
  if redis.call('EXISTS', key) == 1 then
    local t = info(key)
    local first = t['first-entry']
    if tonumber(t['entries-added']) > tonumber(t['length']) then
      if first and first[1] then
        local p = pred(first[1])
        if less(last, p) then resync = p end
      elseif less(last, t['last-generated-id']) then
        resync = t['last-generated-id']
      end
    end
    if is_chan and first and first[1] then
      local fms = parse(first[1])
      if lms < fms - ttl then
        local cut = (fms - ttl) .. '-0'
        if resync == '' or less(resync, cut) then resync = cut end
      end
    end
  elseif is_chan and lms < now - ttl and redis.call('EXISTS', global) == 1 then
    local g = info(global)['last-generated-id']
    if g and less(last, g) then resync = g end
  end
end

local entries
if last == '' then
  entries = redis.call('XRANGE', key, '-', '+', 'COUNT', limit)
else
  entries = redis.call('XRANGE', key, '(' .. last, '+', 'COUNT', limit)
end
local out = { resync }
for _, e in ipairs(entries) do
  out[#out + 1] = e[1]
  local f = e[2]
  for i = 1, #f, 2 do
    if f[i] == 'e' then out[#out + 1] = f[i + 1] end
  end
end
return out
