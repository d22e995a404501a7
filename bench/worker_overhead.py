"""Worker benchmark: the service's overhead per job, and metric-ingestion throughput into Postgres.

    python bench/worker_overhead.py [--jobs 3]

Needs PostgreSQL (LINGUDISTILL_TEST_PG_ADMIN, default postgresql://postgres@127.0.0.1:5432/postgres) and Redis
(127.0.0.1:6379, database 12). Uses a throw-away database, a unique queue and local storage.

1. Overhead per job: the tiny toy job through a real worker, timed from its events. Service overhead is the time
   the service adds around the engine: submission -> claim (broker and dispatch), claim -> child spawned, and
   last step -> succeeded (final uploads and bookkeeping). Interpreter start, engine import and model load are
   shown apart. Baseline, same run: the same job by `run_job` in a fresh interpreter (no service).
2. Ingestion: metric rows per second into Postgres, batched as the supervisor writes them (one upsert per step,
   and one per second of steps), against one INSERT per value.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import redis
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.db import make_engine, make_sessionmaker, session_scope, upgrade_database  # noqa: E402
from service.jobs import repository  # noqa: E402
from service.models import Job, JobEvent, JobStatus, Metric  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.storage import make_storage  # noqa: E402
from tests.worker.conftest import Stack, job_spec, stack_env  # noqa: E402

PG_ADMIN = os.environ.get("LINGUDISTILL_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
BASELINE = """
import sys, time; t0 = time.perf_counter()
from lingudistill.pipeline import run_job; from lingudistill.spec import JobSpec
run_job(JobSpec.model_validate_json(open(sys.argv[1]).read()), sys.argv[2]); print(time.perf_counter() - t0)
"""


def fresh_database() -> tuple[str, str]:
    name = f"ld_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_ADMIN.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    upgrade_database(url)
    return name, url


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def stage_times(sessions, job_id: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    with sessions() as session:
        events = list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))
        job = session.get(Job, job_id)
    at = {}
    for event in events:
        key = event.data.get("status") if event.type == "status" else event.type
        at.setdefault(key, event.created_at.timestamp())
    return {
        "submit_to_claim": at["validating"] - at["queued"],
        "claim_to_spawn": at["child_started"] - at["validating"],
        "import_validate_load": at["training"] - at["child_started"],
        "training": at["evaluating"] - at["training"],
        "finish": at["succeeded"] - at["evaluating"],
        "total": job.finished_at.timestamp() - at["queued"],  # type: ignore[union-attr]
    }


def bench_overhead(jobs: int, tmp: Path) -> None:
    from lingudistill.tiny.llava import build_llava
    from tests.engine.conftest import write_tiny_data

    world = tmp / "world"
    build_llava(world, teacher_matches_student=False)
    write_tiny_data(world)
    name, url = fresh_database()
    try:
        stack = local_stack(url, tmp)
        worker = stack.worker()
        spec = job_spec(world, stack.queue, max_steps=20, checkpoint_every=10)
        rows = []
        for _ in range(jobs):
            job_id = stack.submit(spec)
            stack.wait_status(job_id, {JobStatus.succeeded, JobStatus.failed}, timeout=300)
            rows.append(stage_times(stack.sessions, job_id))
        worker.stop()
        client = redis.Redis(db=12)
        for key in client.scan_iter(match=f"*{stack.queue}*"):
            client.delete(key)
        baseline = run_baseline(spec, tmp)
    finally:
        drop_database(name)
    report_overhead(rows, baseline)


def local_stack(url: str, tmp: Path) -> Stack:
    broker, storage = "redis://127.0.0.1:6379/12", (tmp / "storage").as_uri()
    settings = Settings(database_url=url, broker_url=broker, storage_url=storage, data_dir=tmp / "data",
                        allowed_local_roots=[Path("/")])  # fmt: skip
    (tmp / "logs").mkdir()
    sessions = make_sessionmaker(make_engine(url))
    env = stack_env(url, broker, storage, None, tmp / "scratch")
    return Stack(settings, env, sessions, make_storage(settings), f"bench-{secrets.token_hex(3)}", tmp / "logs")  # type: ignore[arg-type]


def run_baseline(spec: dict, tmp: Path) -> float:
    import json

    (tmp / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", BASELINE, str(tmp / "spec.json"), str(tmp / "baseline")]
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True)
    return time.perf_counter() - started


def report_overhead(rows: list[dict[str, float]], baseline: float) -> None:
    median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    overhead = median["submit_to_claim"] + median["claim_to_spawn"] + median["finish"]
    print(f"job through the service (median of {len(rows)}):")
    for key, value in median.items():
        print(f"  {key:22s} {value:7.2f} s")
    print(f"service overhead (submit->claim + claim->spawn + finish): {overhead:.2f} s "
          f"= {overhead / median['total']:.1%} of the job's {median['total']:.1f} s")  # fmt: skip
    print(f"baseline: the same job by run_job in a fresh interpreter: {baseline:.1f} s; "
          f"service / baseline = {median['total'] / baseline:.2f}x")  # fmt: skip


def bench_ingestion(steps: int = 2000, names: int = 20) -> None:
    name, url = fresh_database()
    try:
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        per_value = ingest(sessions, steps // 10, names, batch_steps=0)
        per_step = ingest(sessions, steps, names, batch_steps=1)
        per_second = ingest(sessions, steps, names, batch_steps=50)
        engine.dispose()
    finally:
        drop_database(name)
    print(f"metric ingestion into Postgres ({names} metrics per step):")
    print(f"  one INSERT per value (baseline): {per_value:9.0f} rows/s")
    print(f"  one upsert per step:             {per_step:9.0f} rows/s  ({per_step / per_value:.1f}x)")
    print(f"  one upsert per 50 steps (~1 s):  {per_second:9.0f} rows/s  ({per_second / per_value:.1f}x)")


def ingest(sessions, steps: int, names: int, batch_steps: int) -> float:  # type: ignore[no-untyped-def]
    job_id = new_job(sessions)
    rows = [(step, f"metric_{n}", float(step * n)) for step in range(1, steps + 1) for n in range(names)]
    started = time.perf_counter()
    if batch_steps == 0:
        for step, metric, value in rows:
            with session_scope(sessions) as session:
                session.add(Metric(job_id=job_id, attempt=1, step=step, name=metric, value=value))
    else:
        size = batch_steps * names
        for i in range(0, len(rows), size):
            with session_scope(sessions) as session:
                repository.record_metrics(session, job_id, 1, rows[i : i + size])
    return len(rows) / (time.perf_counter() - started)


def new_job(sessions) -> str:  # type: ignore[no-untyped-def]
    from service.keys.service import create_key

    with session_scope(sessions) as session:
        tenant = create_key(session, f"bench-{secrets.token_hex(3)}").tenant_id
        job = Job(tenant_id=tenant, name="bench", spec={}, attempt=1, status=JobStatus.running)
        session.add(job)
    return job.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3)
    args = parser.parse_args()
    bench_ingestion()
    with tempfile.TemporaryDirectory(prefix="ld-bench-") as tmp:
        bench_overhead(args.jobs, Path(tmp))


if __name__ == "__main__":
    main()
