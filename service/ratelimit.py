"""Per-API-key token buckets, and per-address buckets of failed authentications.

With Redis (a redis:// broker, or LINGUDISTILL_RATE_LIMIT_REDIS_URL) the buckets live in Redis and every API
process and replica takes from the same bucket, so a key gets its limit once however many processes serve it.
Without Redis (the embedded default: one process, filesystem broker) the buckets live in process memory.
`make_limiter` picks one from the settings; both answer `acquire(key)` with the seconds to wait (0: allowed).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.errors import RateLimited
from service.settings import Settings

log = logging.getLogger(__name__)


class RateLimiter(Protocol):
    def acquire(self, key: str) -> float:
        """Take one token for `key`: 0 if allowed, else the seconds to wait before the next one."""
        ...

    def peek(self, key: str) -> float:
        """Like acquire, but take nothing: 0 if a token is there, else the seconds until one is."""
        ...

    def retry_after_s(self, wait: float) -> int:
        """The Retry-After header for a refusal: whole seconds, at least 1."""
        ...


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucketLimiter:
    """Buckets in this process: behind N processes each holds its own, so a key gets N times its limit."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take one token for `key`: 0 if allowed, else the seconds to wait before the next one."""
        return self._step(key, take=True)

    def peek(self, key: str) -> float:
        return self._step(key, take=False)

    def _step(self, key: str, take: bool) -> float:
        now = self.clock()
        with self._lock:
            bucket = self._buckets.setdefault(key, _Bucket(float(self.burst), now))
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1 if take else 0
                return 0.0
            return (1 - bucket.tokens) / self.rate

    def retry_after_s(self, wait: float) -> int:
        return max(1, math.ceil(wait))


# One atomic step on a bucket hash {tokens, updated (microseconds)}: ARGV[3] 'take' takes a token, 'peek' only
# looks (and writes nothing when a token is there). Redis's own clock, so the API hosts' clocks do not matter. The
# key expires when the bucket would be full again: an idle key is the same as a missing one.
# The wait is returned as a string because Redis truncates a Lua number reply to an integer.
_TAKE_TOKEN_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local take = ARGV[3] == 'take'
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(bucket[1]) or burst
local updated = tonumber(bucket[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - updated) / 1000000 * rate)
local wait = 0
if tokens < 1 then
    wait = (1 - tokens) / rate
elseif not take then
    return '0'
else
    tokens = tokens - 1
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'updated', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000))
return tostring(wait)
"""

KEY_PREFIX = "lingudistill:ratelimit:"
WARN_EVERY_S = 60.0  # during a Redis outage every request fails open; one log line a minute says so


class RedisTokenBucketLimiter:
    """Buckets in Redis, shared by every API process: a key gets its limit once, not once per process.

    Fails open: if Redis cannot be reached, the request is allowed and a warning is logged (at most once a
    minute), because a rate limiter must not take the API down. `make_limiter` gives the client short timeouts
    and no retries, so an unreachable Redis costs a request little time.
    """

    def __init__(self, client: redis.Redis, rate_per_s: float, burst: int) -> None:
        self.client = client
        self.rate = rate_per_s
        self.burst = burst
        self._take_token = client.register_script(_TAKE_TOKEN_LUA)
        self._warned_at = -math.inf

    def acquire(self, key: str) -> float:
        """Take one token for `key`: 0 if allowed (or Redis is unreachable), else the seconds to wait."""
        return self._step(key, "take")

    def peek(self, key: str) -> float:
        return self._step(key, "peek")

    def _step(self, key: str, mode: str) -> float:
        try:
            wait = self._take_token(keys=[KEY_PREFIX + key], args=[self.rate, self.burst, mode])
        except redis.RedisError as error:
            self._warn_failing_open(error)
            return 0.0
        return float(wait)

    def retry_after_s(self, wait: float) -> int:
        return max(1, math.ceil(wait))

    def _warn_failing_open(self, error: redis.RedisError) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning("rate limiter: Redis unreachable, allowing requests without a limit: %s", error)


# --- requests that fail authentication ---------------------------------------------------------------------------
# A bad or missing key has no bucket of its own, so failures are counted per client address, in the same kind of
# bucket. The address is checked BEFORE the key is looked up: once it has spent its failures, its requests are
# refused without touching the database, whatever key they carry. Successes take nothing from it, so clients
# sharing an address (NAT) are not slowed by each other's valid requests. Behind a proxy every client has the
# proxy's address; run uvicorn with --proxy-headers and --forwarded-allow-ips so the client's own is used.


def auth_failure_key(address: str) -> str:
    return f"auth-failures:{address}"


def refuse_if_failing(limiter: RateLimiter, address: str) -> None:
    wait = limiter.peek(auth_failure_key(address))
    if wait > 0:
        raise RateLimited(limiter.retry_after_s(wait))


def count_auth_failure(limiter: RateLimiter, address: str) -> None:
    limiter.acquire(auth_failure_key(address))


def make_limiter(settings: Settings) -> RateLimiter:
    """Redis buckets when the service runs with Redis, in-process buckets in the embedded default."""
    url = settings.rate_limit_redis_url_resolved
    if url is None:
        return TokenBucketLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    # Short timeouts and no retries: while Redis is away each request should fail open quickly, not wait on it.
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
    return RedisTokenBucketLimiter(client, settings.rate_limit_per_s, settings.rate_limit_burst)
