"""The Redis token bucket is one bucket per key for every API process; without Redis the buckets stay in process."""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from service.db import session_scope
from service.keys.service import create_key
from service.ratelimit import (
    KEY_PREFIX,
    RedisTokenBucketLimiter,
    TokenBucketLimiter,
    auth_failure_key,
    make_limiter,
)
from service.settings import Settings
from tests.service.conftest import free_port
from tests.service.test_errors import assert_problem

# this file's own Redis database on the shared server (keys are random; only ours are deleted)
REDIS_DB = int(os.environ.get("LINGUDISTILL_TEST_REDIS_DB", "13"))
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def bucket_key(redis_client: redis.Redis) -> Iterator[Callable[[], str]]:
    """Fresh limiter keys; their Redis entries are deleted after the test (only ours, never the database)."""
    made: list[str] = []

    def make() -> str:
        made.append(f"test-{secrets.token_hex(6)}")
        return made[-1]

    yield make
    if made:
        redis_client.delete(*(KEY_PREFIX + key for key in made))


def api_process(rate_per_s: float, burst: int) -> RedisTokenBucketLimiter:
    """A limiter with its own connection, standing for one API process."""
    return RedisTokenBucketLimiter(redis.Redis.from_url(REDIS_URL), rate_per_s, burst)


def take(limiter: RedisTokenBucketLimiter, key: str, times: int) -> list[bool]:
    return [limiter.acquire(key) == 0 for _ in range(times)]


@pytest.mark.redis
def test_two_processes_share_one_bucket(bucket_key):
    first, second = api_process(0.5, 4), api_process(0.5, 4)
    key = bucket_key()
    allowed = [process.acquire(key) == 0 for process in (first, second, first, second)]
    assert allowed == [True] * 4  # the burst, taken half by each process
    wait = second.acquire(key)
    assert 0 < wait <= 2  # one token every 2 s
    assert second.retry_after_s(wait) in (1, 2)
    assert first.acquire(key) > 0


@pytest.mark.redis
def test_the_bucket_refills_up_to_the_burst(bucket_key):
    limiter, key = api_process(2, 2), bucket_key()  # slow enough that a stalled CI machine refills no token
    assert take(limiter, key, 3) == [True, True, False]
    time.sleep(1.5)  # three tokens' worth of time, but the bucket holds two
    assert take(limiter, key, 3) == [True, True, False]


@pytest.mark.redis
def test_keys_are_independent(bucket_key):
    limiter, spent, fresh = api_process(0.01, 1), bucket_key(), bucket_key()
    assert take(limiter, spent, 2) == [True, False]
    assert take(limiter, fresh, 1) == [True]


@pytest.mark.redis
def test_an_idle_key_leaves_nothing_in_redis(bucket_key, redis_client):
    limiter, key = api_process(20, 2), bucket_key()
    limiter.acquire(key)
    assert 0 < redis_client.pttl(KEY_PREFIX + key) <= 50  # full again after one token at 20/s
    time.sleep(0.2)
    assert not redis_client.exists(KEY_PREFIX + key)


def test_an_unreachable_redis_fails_open_with_a_warning(caplog, tmp_path):
    unused = f"redis://127.0.0.1:{free_port()}/0"
    limiter = make_limiter(
        Settings(data_dir=tmp_path, rate_limit_redis_url=unused, rate_limit_per_s=0.01, rate_limit_burst=1)
    )
    with caplog.at_level(logging.WARNING, logger="service.ratelimit"):
        assert [limiter.acquire("k") for _ in range(3)] == [0, 0, 0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Redis unreachable" in warnings[0].getMessage()  # once, not per request


def test_the_factory_uses_redis_when_the_service_runs_with_redis(tmp_path):
    assert isinstance(make_limiter(Settings(data_dir=tmp_path)), TokenBucketLimiter)
    assert isinstance(make_limiter(Settings(data_dir=tmp_path, broker_url="filesystem://")), TokenBucketLimiter)
    from_broker = make_limiter(Settings(data_dir=tmp_path, broker_url=REDIS_URL))
    assert isinstance(from_broker, RedisTokenBucketLimiter)
    assert from_broker.client.connection_pool.connection_kwargs["db"] == REDIS_DB
    own = make_limiter(Settings(data_dir=tmp_path, rate_limit_redis_url="redis://127.0.0.1:6379/12"))
    assert isinstance(own, RedisTokenBucketLimiter)
    assert own.client.connection_pool.connection_kwargs["db"] == 12


@pytest.mark.redis
def test_two_api_instances_share_the_limit(make_client, sessions, redis_client):
    with session_scope(sessions) as session:
        new = create_key(session, f"t-{secrets.token_hex(3)}")
    limits = {"broker_url": REDIS_URL, "rate_limit_per_s": 0.5, "rate_limit_burst": 3}
    first, second = make_client(new.key, **limits), make_client(new.key, **limits)
    try:
        statuses = [client.get("/v1/jobs").status_code for client in (first, second, first)]
        assert statuses == [200, 200, 200]
        response = second.get("/v1/jobs")  # alone, this instance has served one request
        assert_problem(response, 429, "rate_limited")
        assert int(response.headers["retry-after"]) >= 1
    finally:
        redis_client.delete(KEY_PREFIX + new.key_id)


@pytest.mark.redis
def test_peek_takes_no_token(bucket_key):
    for limiter in (api_process(0.01, 2), TokenBucketLimiter(0.01, 2)):
        key = bucket_key()
        assert [limiter.peek(key) for _ in range(5)] == [0] * 5
        assert [limiter.acquire(key) == 0 for _ in range(3)] == [True, True, False]
        assert limiter.peek(key) > 0


def bad_key_requests(client, times: int) -> list[int]:
    return [client.get("/v1/jobs", headers={"Authorization": "Bearer ldk_wrong"}).status_code for _ in range(times)]


@pytest.mark.parametrize("backend", ["postgres", "sqlite"], indirect=True)
def test_an_address_that_keeps_failing_is_refused_before_the_key_lookup(make_client, new_key):
    client = make_client(new_key(), rate_limit_per_s=0.01, rate_limit_burst=3)  # one app: one set of buckets
    assert [client.get("/v1/jobs").status_code for _ in range(2)] == [200, 200]  # successes take nothing
    assert bad_key_requests(client, 2) == [401, 401]
    assert client.get("/v1/jobs", headers={"Authorization": ""}).status_code == 401  # no key counts the same
    assert bad_key_requests(client, 1) == [429]
    refused = client.get("/v1/jobs")  # a valid key from that address is refused too: its key is never looked up
    assert_problem(refused, 429, "rate_limited")
    assert int(refused.headers["retry-after"]) >= 1
    assert make_client(new_key()).get("/v1/jobs").status_code == 200  # another app (process) has its own buckets


@pytest.mark.redis
def test_failures_are_counted_across_api_instances(make_client, redis_client):
    limits = {"broker_url": REDIS_URL, "rate_limit_per_s": 0.01, "rate_limit_burst": 2}
    first, second = make_client(None, **limits), make_client(None, **limits)
    redis_client.delete(KEY_PREFIX + auth_failure_key("testclient"))
    try:
        assert bad_key_requests(first, 1) + bad_key_requests(second, 1) == [401, 401]
        assert bad_key_requests(first, 1) == [429]
    finally:
        redis_client.delete(KEY_PREFIX + auth_failure_key("testclient"))
