-- Deletes finished jobs that finished before a time, with everything that belongs to them: their
-- index entries, idempotency key, logs and file references. Safe on every node at once.
--
-- ARGV[1] prefix, ARGV[2] finished before (µs), ARGV[3] max.
-- Returns the number of jobs deleted.
local P = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', P .. ':fin', '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local key = P .. ':job:' .. id
  local h = redis.call('HMGET', key, 's', 'k', 'f', 't')
  if h[1] then redis.call('ZREM', P .. ':st:' .. h[1], id) end
  -- Job counts (see counts.lua; a job without `t` predates them and is counted by its rebuild).
  if h[1] and h[4] then
    local f = h[4] .. '\n' .. h[1]
    if redis.call('HINCRBY', P .. ':jc', f, -1) <= 0 then redis.call('HDEL', P .. ':jc', f) end
  end
  if h[2] and redis.call('GET', P .. ':idem:' .. h[2]) == id then
    redis.call('DEL', P .. ':idem:' .. h[2])
  end
  if h[3] then
    for hash in string.gmatch(h[3], '%S+') do
      local rk = P .. ':fref:' .. hash
      redis.call('SREM', rk, id)
      if redis.call('SCARD', rk) == 0 then redis.call('SREM', P .. ':fhashes', hash) end
    end
  end
  redis.call('DEL', key, P .. ':log:' .. id, P .. ':logn:' .. id)
  redis.call('ZREM', P .. ':all', id)
  redis.call('ZREM', P .. ':fin', id)
end
return #ids
