"""Scale-out benchmark: several `python -m worker` processes on one Redis and one Postgres, standing in for hosts.

    python bench/scale_out.py [--workers 3] [--jobs 6] [--steps 20]

Needs PostgreSQL (LINGUDISTILL_TEST_PG_ADMIN, default postgresql://postgres@127.0.0.1:5432/postgres) and Redis
(127.0.0.1:6379, database 13). Uses a throw-away database, unique queues and local storage. Three runs of the same
batch of tiny jobs (tests/engine/conftest.py), timed from the jobs' events:
1. one worker (the baseline);
2. N workers: makespan, jobs per worker, queue wait, and the run-once checks (one claim, one child, each step's
   metrics once per job);
3. N workers, one of them killed with -9 mid-job: how long until its job trains again on another worker (lease
   expiry + sweep + claim + child start), and how many steps were redone (kill step - checkpoint step).
The machine's cores are shared by every worker's training child, so the speed-up is bounded by the cores, not by
the number of workers: on a real fleet each worker has its own GPU.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.worker_overhead import drop_database, fresh_database  # noqa: E402
from service.db import make_engine, make_sessionmaker  # noqa: E402
from service.models import JobStatus  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.storage import make_storage  # noqa: E402
from tests.worker.conftest import Stack, job_spec, stack_env, wait_until  # noqa: E402
from tests.worker.test_scale_out import (  # noqa: E402
    check_ran_once,
    claims,
    running_with_checkpoint,
    start_workers,
    worker_pid,
)

REDIS_DB = 13
S = JobStatus
FINAL = {S.succeeded, S.failed, S.cancelled}


def make_stack(url: str, tmp: Path) -> Stack:
    broker, storage = f"redis://127.0.0.1:6379/{REDIS_DB}", (tmp / "storage").as_uri()
    settings = Settings(database_url=url, broker_url=broker, storage_url=storage, data_dir=tmp / "data",
                        allowed_local_roots=[Path("/")], lease_s=5, max_attempts=3)  # fmt: skip
    (tmp / "logs").mkdir()
    sessions = make_sessionmaker(make_engine(url))
    env = stack_env(url, broker, storage, None, tmp / "scratch")
    return Stack(settings, env, sessions, make_storage(settings), f"bench-so-{secrets.token_hex(3)}", tmp / "logs")  # type: ignore[arg-type]


def at(stack: Stack, job_id: str, status: str, nth: int = 0) -> datetime:
    return [e.created_at for e in stack.events(job_id, "status") if e.data["status"] == status][nth]


def run_batch(stack: Stack, world: Path, workers: int, jobs: int, steps: int, kill: bool) -> dict:
    queue = f"{stack.queue}-{workers}w{'-kill' if kill else ''}"
    pool = start_workers(stack, workers, queue)
    by_pid = {w.process.pid: w for w in pool if w.process is not None}
    training = {"max_steps": steps, "checkpoint_every": 4}
    started = time.time()
    job_ids = [stack.submit(job_spec(world, queue, **training)) for _ in range(jobs)]
    result: dict = {"workers": workers, "jobs": jobs}
    if kill:
        mid_run = lambda: running_with_checkpoint(stack, job_ids, steps)  # noqa: E731
        victim = wait_until(mid_run, 120, "a job mid-run", interval=0.25)
        owner = claims(stack, victim)[0].worker
        killed_at_step = stack.job(victim).step or 0
        checkpoint = stack.checkpoints(victim)[-1].step
        by_pid[worker_pid(owner)].kill9()
        killed = time.time()
    for job_id in job_ids:
        stack.wait_status(job_id, FINAL, timeout=600)
    result["makespan_s"] = max(stack.job(j).finished_at.timestamp() for j in job_ids) - started  # type: ignore[union-attr]
    result["per_worker"] = sorted(
        sum(1 for j in job_ids for c in claims(stack, j) if worker_pid(c.worker) == pid) for pid in by_pid
    )
    waits = [(at(stack, j, "validating") - at(stack, j, "queued")).total_seconds() for j in job_ids]
    result["queue_wait_median_s"], result["queue_wait_max_s"] = statistics.median(waits), max(waits)
    for job_id in job_ids:
        check_ran_once(stack, job_id, 2 if kill and job_id == victim else 1, steps)
    result["run_once"] = "ok"
    if kill:
        resumed = next(e for e in stack.events(victim, "training") if e.attempt == 2)
        result["kill"] = {
            "requeued_after_s": at(stack, victim, "queued", 1).timestamp() - killed,
            "claimed_elsewhere_after_s": at(stack, victim, "validating", 1).timestamp() - killed,
            "training_again_after_s": resumed.created_at.timestamp() - killed,
            "resumed_from_step": resumed.data["from_step"],
            "steps_redone": max(0, killed_at_step - checkpoint),
            "moved_to_other_worker": worker_pid(claims(stack, victim)[1].worker) != worker_pid(owner),
        }
    for worker in pool:
        worker.stop()
    return result


def report(rows: list[dict]) -> None:
    base = rows[0]["makespan_s"]
    print(f"{'run':34s} {'makespan':>9s} {'jobs/min':>9s} {'speed-up':>9s} {'jobs per worker':>16s} "
          f"{'queue wait median/max':>22s}  run once")  # fmt: skip
    for row in rows:
        name = f"{row['workers']} worker(s), {row['jobs']} jobs" + (", kill -9 one" if "kill" in row else "")
        print(f"{name:34s} {row['makespan_s']:8.1f}s {60 * row['jobs'] / row['makespan_s']:9.2f} "
              f"{base / row['makespan_s']:8.2f}x {row['per_worker']!s:>16s} "
              f"{row['queue_wait_median_s']:10.1f}s / {row['queue_wait_max_s']:5.1f}s  {row['run_once']}")  # fmt: skip
    for row in rows:
        if "kill" in row:
            kill = row["kill"]
            print("kill -9 of a worker mid-job (lease 5 s, sweep every 1 s):")
            for key, value in kill.items():
                print(f"  {key:26s} {value:.1f}" if isinstance(value, float) else f"  {key:26s} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    from lingudistill.tiny.llava import build_llava
    from tests.engine.conftest import write_tiny_data

    with tempfile.TemporaryDirectory(prefix="ld-bench-so-") as tmp:
        world = Path(tmp) / "world"
        build_llava(world, teacher_matches_student=False)
        write_tiny_data(world)
        name, url = fresh_database()
        stack = make_stack(url, Path(tmp))
        try:
            rows = [
                run_batch(stack, world, 1, args.jobs, args.steps, kill=False),
                run_batch(stack, world, args.workers, args.jobs, args.steps, kill=False),
                run_batch(stack, world, args.workers, args.jobs, args.steps, kill=True),
            ]
        finally:
            for worker in stack.workers:
                worker.stop()
            client = redis.Redis(db=REDIS_DB)
            for key in client.scan_iter(match=f"*{stack.queue}*"):
                client.delete(key)
            drop_database(name)
    report(rows)


if __name__ == "__main__":
    main()
