-- Take a lock with expiry, handing out a fencing token that only grows.
-- KEYS[1] the lock (holds the token), KEYS[2] the fencing counter
-- ARGV[1] time to live (ms)
-- Returns the fencing token, or nil when someone else holds the lock.
if redis.call('EXISTS', KEYS[1]) == 1 then return nil end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
