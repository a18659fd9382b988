"""Rate limits: a token bucket per connection (and, with the Redis broker, per user)."""

from __future__ import annotations


class TokenBucket:
    """`burst` tokens, refilled at `rate` per second; `take()` spends one.

    Time comes from the caller (a monotonic clock), so the bucket is a pure value.
    """

    __slots__ = ("rate", "burst", "_tokens", "_stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = now

    def full(self, now: float) -> bool:
        """Whether the bucket has refilled to its burst: as good as a new one."""
        return self._tokens + (now - self._stamp) * self.rate >= self.burst

    def take(self, now: float) -> float:
        """Spend a token; returns 0 on success, else the seconds until one is available."""
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate
