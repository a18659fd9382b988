-- Count a user's connections across workers, refusing one over the limit.
-- KEYS[1] the user's connections ZSET conn -> lease expiry (ms)
-- ARGV[1] conn id, ARGV[2] now (ms), ARGV[3] expiry (ms), ARGV[4] limit
-- Returns 1 when the connection is counted, 0 when the user is at the limit.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) - tonumber(ARGV[2]) + 60000)
return 1
