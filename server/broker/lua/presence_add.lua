-- Add one connection's lease to a room's presence.
-- KEYS[1] room users   ZSET user -> latest lease expiry (ms)
-- KEYS[2] room cards   HASH user -> card (JSON)
-- KEYS[3] user conns   ZSET conn -> lease expiry (ms), for this room
-- ARGV[1] user id, ARGV[2] conn id, ARGV[3] card, ARGV[4] now (ms), ARGV[5] expiry (ms)
-- Returns 1 when the user was not present before (the others are told), else 0.
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[4])
local before = redis.call('ZCARD', KEYS[3])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[2])
redis.call('ZADD', KEYS[1], 'GT', ARGV[5], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local keep = tonumber(ARGV[5]) - tonumber(ARGV[4]) + 60000
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], keep, 'GT') redis.call('PEXPIRE', KEYS[i], keep, 'NX') end
if before == 0 then return 1 end
return 0
