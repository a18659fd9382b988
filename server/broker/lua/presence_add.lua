-- Add (or renew) leases in one room's presence: one connection's join, or all of this
-- worker's leases in the room at a heartbeat.
-- KEYS[1] room users   ZSET user -> latest lease expiry (ms)
-- KEYS[2] room cards   HASH user -> card (JSON)
-- ARGV[1] now (ms), ARGV[2] expiry (ms), ARGV[3] prefix of the per-user conns keys (ZSET
-- conn -> lease expiry, for this room; the user id is appended), then for each lease:
-- user id, conn id, card
-- Returns per lease 1 when its user was not present before it (the others are told), else 0.
local now, expiry = ARGV[1], ARGV[2]
local keep = tonumber(expiry) - tonumber(now) + 60000
local lapsed = {}
for i = 4, #ARGV, 3 do
  local user, conns = ARGV[i], ARGV[3] .. ARGV[i]
  redis.call('ZREMRANGEBYSCORE', conns, '-inf', now)
  local before = redis.call('ZCARD', conns)
  redis.call('ZADD', conns, expiry, ARGV[i + 1])
  redis.call('ZADD', KEYS[1], 'GT', expiry, user)
  redis.call('HSET', KEYS[2], user, ARGV[i + 2])
  redis.call('PEXPIRE', conns, keep, 'GT')
  redis.call('PEXPIRE', conns, keep, 'NX')
  lapsed[#lapsed + 1] = before == 0 and 1 or 0
end
for i = 1, 2 do redis.call('PEXPIRE', KEYS[i], keep, 'GT') redis.call('PEXPIRE', KEYS[i], keep, 'NX') end
return lapsed
