-- The cards of a room's present users: those with a lease not yet expired.
-- KEYS[1] room users   ZSET user -> latest lease expiry (ms)
-- KEYS[2] room cards   HASH user -> card (JSON)
-- ARGV[1] now (ms)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
local cards = {}
for i = 1, #live, 1000 do  -- unpack() takes a few thousand values at most
  for _, card in ipairs(redis.call('HMGET', KEYS[2], unpack(live, i, math.min(i + 999, #live)))) do
    if card then cards[#cards + 1] = card end
  end
end
return cards
