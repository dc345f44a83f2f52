-- Reads one signal key's records in time order (see src/store/redis/signals.rs), within a budget.
--
-- KEYS[1] `P:sig:{key}` records by time (score µs, member the record JSON).
-- ARGV[1] since (µs, inclusive), ARGV[2] records at most, ARGV[3] bytes: the page ends once its
-- records reach this many bytes, ARGV[4] 'page' (return the records) or 'seqs' (only their
-- numbers, read from each record's `"seq":N`; no byte budget, and at most the count: the lowest
-- numbers of the last microsecond read), ARGV[5] (optional) until (µs, inclusive): no record
-- written after it is read.
-- The rule of `page_ends` (src/store/signals.rs): a page ends at its count or its bytes, never
-- between two records of the same microsecond, and never before its first record. Records are
-- read 8 at a time by rank, so the script holds at most the page and 8 records more, whatever
-- the key holds.
-- Returns {more, items}: more = 1 when the page was cut (records after its last may exist).
local k = KEYS[1]
local since, limit, budget, mode = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local upto = tonumber(ARGV[5])
local rank = redis.call('ZCOUNT', k, '-inf', '(' .. since)
local out, n, bytes, last, first = {}, 0, 0, nil, 1
-- A read of numbers keeps `limit` of them: the lowest of its last microsecond's (one
-- microsecond's records come in the order of their text: "seq":10 before "seq":9).
local function fit(items)
  if mode == 'page' or #items <= limit then return items end
  local tail = {}
  for i = first, #items do tail[#tail + 1] = items[i] end
  table.sort(tail)
  for i = first, limit do items[i] = tail[i - first + 1] end
  for i = #items, limit + 1, -1 do items[i] = nil end
  return items
end
while true do
  local got = redis.call('ZRANGE', k, rank, rank + 7, 'WITHSCORES')
  if #got == 0 then return {0, fit(out)} end
  for j = 1, #got, 2 do
    local rec, at = got[j], got[j + 1]
    if upto and tonumber(at) > upto then return {0, fit(out)} end
    if n > 0 and (n >= limit or (mode == 'page' and bytes >= budget)) and at ~= last then
      return {1, fit(out)}
    end
    if at ~= last then first = n + 1 end
    n = n + 1
    if mode == 'page' then
      out[n] = rec
    else
      -- The key's JSON string comes first; a quote inside it is escaped, so the first `,"seq":`
      -- is the record's own.
      out[n] = tonumber(string.match(rec, ',"seq":(%d+),')) or 0
    end
    bytes = bytes + #rec
    last = at
  end
  rank = rank + 8
end
