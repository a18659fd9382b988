-- Drop the users of a room whose every lease has expired (their worker died).
-- KEYS[1] room users ZSET, KEYS[2] room cards HASH
-- ARGV[1] now (ms), ARGV[2] prefix of the per-user conns keys (the user id is appended)
-- Returns the cards of the users removed; each is returned to exactly one caller.
local gone = {}
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, user in ipairs(stale) do
  local conns = ARGV[2] .. user
  redis.call('ZREMRANGEBYSCORE', conns, '-inf', ARGV[1])
  if redis.call('ZCARD', conns) == 0 then
    local card = redis.call('HGET', KEYS[2], user)
    redis.call('ZREM', KEYS[1], user)
    redis.call('HDEL', KEYS[2], user)
    redis.call('DEL', conns)
    if card then table.insert(gone, card) end
  else
    local latest = redis.call('ZRANGE', conns, -1, -1, 'WITHSCORES')
    redis.call('ZADD', KEYS[1], latest[2], user)
  end
end
return gone
