-- Take tokens from a bucket shared by every worker: up to ARGV[4], at least one, or none.
-- KEYS[1] the bucket HASH {tokens, stamp}
-- ARGV[1] rate (tokens per second), ARGV[2] burst, ARGV[3] now (ms), ARGV[4] how many are wanted
-- Returns {taken, wait}: wait is 0 when tokens were taken, else the milliseconds until one will be there.
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local want = tonumber(ARGV[4]) or 1
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens, stamp = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate / 1000)
local taken, wait = 0, 0
if tokens >= 1 then
  taken = math.min(want, math.floor(tokens))
  tokens = tokens - taken
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {taken, wait}
