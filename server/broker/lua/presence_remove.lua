-- Remove one connection's lease from a room's presence.
-- KEYS[1] room users ZSET, KEYS[2] room cards HASH, KEYS[3] user conns ZSET (see presence_add.lua)
-- ARGV[1] user id, ARGV[2] conn id, ARGV[3] now (ms)
-- Returns 1 when that was the user's last live connection in the room (the others are told).
local removed = redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[3]) > 0 then
  local latest = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
  redis.call('ZADD', KEYS[1], latest[2], ARGV[1])
  return 0
end
local was = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
if removed == 1 and was == 1 then return 1 end
return 0
