"""What one Postgres and one Redis carry: a running job's writes and reads, each against a no-op baseline.

    python bench/capacity.py [--jobs 64] [--threads 8] [--seconds 4] [--rounds 3] [--rows-per-step 18]
                             [--steps-per-s 1] [--redis-db 14]

Postgres: a fresh database with `--jobs` running jobs. One *job-second* is what a worker's supervisor sends for one
running job in one second (worker/supervisor.py): a metrics flush (`record_metrics` of rows-per-step x steps-per-s
rows plus `update_progress`, one transaction, every LINGUDISTILL_WORKER_METRICS_FLUSH_S = 1 s), a cancel poll
(`get_job_state`, every cancel_poll_s = 1 s) and a third of a lease renewal's share (`renew_lease` every lease_s / 3
= 20 s). `--threads` threads, each a connection, do job-seconds for `--seconds`; job-seconds done per second is
the number of running jobs that Postgres keeps up with. Baselines, in turn with it (`--rounds`), through the same
pool and threads: `SELECT 1` (a round trip) and the smallest commit (one UPDATE of one row: the WAL flush under
any write).
Redis: the API's one call per request (the shared rate-limit bucket, a Lua script) and a Celery dispatch-sized
LPUSH per created job, each against PING through the same client and threads.

Every figure comes from a Python client with a GIL on the same machine as the servers, so on a small machine it is
a floor on what the server carries, bounded by the client; the ratios to the baselines say how much of it is the
server's work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.api_load import create_database, drop_database  # noqa: E402

WORKER = "bench-capacity-worker"
LEASE_S = 60.0
HEARTBEATS_PER_S = 3 / LEASE_S  # renewed every lease_s / 3


def throughput(work: Callable[[int], None], threads: int, seconds: float) -> float:
    """Calls of work(i) completed per second by `threads` threads in `seconds`. Thread t passes i = t, t + threads,
    t + 2 threads ...: at any moment the threads work on different i (different jobs), as real supervisors do."""
    done = [0] * threads
    stop = time.perf_counter() + seconds

    def loop(t: int) -> None:
        while time.perf_counter() < stop:
            work(done[t] * threads + t)
            done[t] += 1

    workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    began = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done) / (time.perf_counter() - began)


def in_turn(works: dict[str, Callable[[int], None]], args: argparse.Namespace) -> list[dict[str, float]]:
    """{name: calls/s} per round, the works measured one after the other in each round."""
    return [
        {name: throughput(work, args.threads, args.seconds) for name, work in works.items()} for _ in range(args.rounds)
    ]


# --- Postgres -----------------------------------------------------------------------------------------------------


def seed_running_jobs(sessions, count: int) -> list[str]:  # type: ignore[no-untyped-def]
    from service.db import session_scope
    from service.models import Job, JobStatus, Tenant

    with session_scope(sessions) as session:
        tenant = Tenant(name="bench-capacity")
        session.add(tenant)
        session.flush()
        jobs = [
            Job(tenant_id=tenant.id, name=f"running-{i}", status=JobStatus.running, spec={"name": "bench"},
                attempt=1, lease_owner=WORKER, total_steps=10**6)
            for i in range(count)
        ]  # fmt: skip
        session.add_all(jobs)
        session.flush()
        return [job.id for job in jobs]


def job_second(sessions, job_ids: list[str], rows_per_flush: int) -> Callable[[int], None]:  # type: ignore[no-untyped-def]
    from service.db import session_scope
    from service.jobs import repository

    def one(i: int) -> None:
        job_id, step = job_ids[i % len(job_ids)], i
        rows = [(step, f"metric_{k}", 0.5) for k in range(rows_per_flush)]
        with session_scope(sessions) as session:  # the supervisor's flush: metrics and progress, one transaction
            repository.record_metrics(session, job_id, 1, rows)
            repository.update_progress(session, job_id, 1, step=step, tokens_per_s=1.0, step_time_s=1.0)
        with sessions() as session:  # the cancel poll
            repository.get_job_state(session, job_id)
        if i % round(1 / HEARTBEATS_PER_S) == 0:
            with session_scope(sessions) as session:
                repository.renew_lease(session, job_id, 1, WORKER, LEASE_S)

    return one


def smallest_commit(sessions, job_ids: list[str]) -> Callable[[int], None]:  # type: ignore[no-untyped-def]
    """One UPDATE of one row and its commit: the floor under any write, set by the WAL flush."""
    from sqlalchemy import update

    from service.db import session_scope
    from service.models import Job, utcnow

    def one(i: int) -> None:
        with session_scope(sessions) as session:
            session.execute(update(Job).where(Job.id == job_ids[i % len(job_ids)]).values(heartbeat_at=utcnow()))

    return one


def select_one(sessions) -> Callable[[int], None]:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    from service.db import session_scope

    def one(_: int) -> None:
        with session_scope(sessions) as session:
            session.execute(text("SELECT 1"))

    return one


def measure_postgres(args: argparse.Namespace) -> list[tuple]:
    from service.db import make_engine, make_sessionmaker, upgrade_database

    name, url = create_database()
    try:
        upgrade_database(url)
        engine = make_engine(url, pool_size=args.threads, max_overflow=0)
        sessions = make_sessionmaker(engine)
        job_ids = seed_running_jobs(sessions, args.jobs)
        rows = round(args.rows_per_step * args.steps_per_s)
        works = {
            "SELECT 1": select_one(sessions),
            "smallest commit": smallest_commit(sessions, job_ids),
            "job-second": job_second(sessions, job_ids, rows),
        }
        rounds = in_turn(works, args)
        engine.dispose()
        return rounds
    finally:
        drop_database(name)


# --- Redis --------------------------------------------------------------------------------------------------------


def measure_redis(args: argparse.Namespace) -> dict[str, list[tuple]]:
    import redis

    from service.ratelimit import RedisTokenBucketLimiter

    client = redis.Redis.from_url(f"redis://127.0.0.1:6379/{args.redis_db}", max_connections=args.threads)
    limiter = RedisTokenBucketLimiter(client, rate_per_s=1e9, burst=10**9)
    message = json.dumps({"body": "x" * 1500, "headers": {}, "properties": {}})  # about a Celery task message
    try:
        return {
            "rate-limit call (per API request)": in_turn(
                {"PING": lambda i: client.ping(), "rate-limit call": lambda i: limiter.acquire(f"bench:{i % 64}")}, args
            ),
            "dispatch LPUSH (per created job)": in_turn(
                {"PING": lambda i: client.ping(), "LPUSH": lambda i: client.lpush("bench:queue", message)}, args
            ),
        }
    finally:
        client.flushdb()


# --- report -------------------------------------------------------------------------------------------------------


def print_rounds(title: str, rounds: list[dict[str, float]]) -> float:
    """Each round's figures and the last one's ratio to the first (the baseline); returns the last one's median."""
    names = list(rounds[0])
    baseline, work = names[0], names[-1]
    print(title)
    for number, figures in enumerate(rounds, start=1):
        row = " | ".join(f"{name} {value:8.0f}/s" for name, value in figures.items())
        print(f"  round {number}: {row} | {work} / {baseline} {figures[work] / figures[baseline]:.3f}")
    median = statistics.median(figures[work] for figures in rounds)
    ratios = {name: statistics.median(f[work] / f[name] for f in rounds) for name in names[:-1]}
    print(f"  median {work} {median:.0f}/s; " + ", ".join(f"{r:.3f}x {name}" for name, r in ratios.items()))
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=64, help="running jobs in the database")
    parser.add_argument("--threads", type=int, default=8, help="client threads, each with its own connection")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows-per-step", type=float, default=18, help="metric rows a step records (see docs)")
    parser.add_argument("--steps-per-s", type=float, default=1.0, help="optimiser steps per second per job")
    parser.add_argument("--redis-db", type=int, default=14, help="flushed at the end")
    args = parser.parse_args()
    print(f"{args.threads} client threads, {args.seconds} s a measurement, {args.rounds} rounds in turn")
    jobs = print_rounds(
        f"Postgres: job-seconds ({args.rows_per_step:g} rows x {args.steps_per_s:g} steps, progress, cancel poll, "
        f"lease share) over {args.jobs} running jobs",
        measure_postgres(args),
    )
    print(f"  -> one Postgres keeps up with about {jobs:.0f} running jobs at {args.steps_per_s:g} step/s each")
    for title, rounds in measure_redis(args).items():
        print_rounds(f"Redis: {title}", rounds)


if __name__ == "__main__":
    main()
