-- Extend a lock, if the caller still holds it.
-- KEYS[1] the lock; ARGV[1] the caller's fencing token, ARGV[2] time to live (ms)
-- Returns 1 when extended, 0 when the lock expired or another holder has it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
