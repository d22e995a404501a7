"""Load and correctness under load: the API plus two real workers on this machine, loopback only, bounded counts.

    python bench/load.py [--jobs 10000] [--concurrency 16] [--baseline 500] [--poll-rate 20] [--api-workers 2]

Design (docs/reliability.md): a fresh Postgres database on the local server, Redis DB 13 with a queue unique to
the run, local storage. Every job's mixture names an uploaded dataset whose upload was invalid: the URI policy
accepts it (the dataset exists), and a worker that claims the job fails it at once (`bad_input`, "not ready")
without spawning a training child, so two workers keep claiming and failing real jobs through the whole run
without training 10,000 models. The tenant limit (8 active jobs) holds the rest, which the workers' sweepers
release as others fail. Phases:
    baseline   `--baseline` submissions with no workers and no polls (the reference latency)
    load       the remaining submissions with both workers running and a steady stream of status polls
               (`--poll-rate` GET /v1/jobs/{id} per second); one cursor walk of GET /v1/jobs mid-load
    verify     a final cursor walk: every accepted job exactly once, nothing else, no duplicates or gaps
Prints p50/p99 per phase and the load/baseline ratios; exits 1 on any error or list inconsistency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.api_load import create_database, drop_database, free_port, percentile, start_server  # noqa: E402

REDIS_DB = 13


def spec(run: str, dataset_id: str, i: int) -> dict[str, Any]:
    return {
        "name": f"load-{i}",
        "student": "s3://models/student",
        "teacher": "hf://Qwen/Qwen2-1.5B-Instruct@main",
        "mixture": [{"name": "text", "uri": f"dataset://{dataset_id}", "weight": 1.0, "distill": True}],
        "training": {"max_steps": 1},
        "resources": {"queue": f"load-{run}"},
        "metadata": {"run": run},
    }


def summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"count": 0, "p50_ms": 0.0, "p99_ms": 0.0}
    return {
        "count": len(latencies),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 0.99),
    }


async def submit(client: Any, run: str, dataset_id: str, numbers: range, concurrency: int, out: dict) -> None:
    queue = iter(numbers)

    async def one() -> None:
        for i in queue:
            began = time.perf_counter()
            response = await client.post("/v1/jobs", json=spec(run, dataset_id, i))
            out["latencies"].append(time.perf_counter() - began)
            if response.status_code == 201:
                out["accepted"].append(response.json()["id"])
            else:
                out["errors"].append((response.status_code, response.text[:200]))

    await asyncio.gather(*(one() for _ in range(concurrency)))


async def poll(client: Any, pools: list[list[str]], rate: float, stop: asyncio.Event, out: dict) -> None:
    """GET /v1/jobs/{id} of a random accepted job, `rate` times a second whatever the latency (one task each)."""

    async def one(job_id: str) -> None:
        began = time.perf_counter()
        response = await client.get(f"/v1/jobs/{job_id}")
        out["latencies"].append(time.perf_counter() - began)
        if response.status_code != 200:
            out["errors"].append((response.status_code, response.text[:200]))

    tasks = []
    while not stop.is_set():
        pool = random.choice([p for p in pools if p] or [[]])
        if pool:
            tasks.append(asyncio.create_task(one(random.choice(pool))))
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)


async def walk(client: Any, run: str) -> tuple[list[str], list[str]]:
    """Every page of GET /v1/jobs (this run's jobs); returns (ids in order, errors)."""
    ids: list[str] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200, "metadata": f"run={run}"}
        if after:
            params["after"] = after
        response = await client.get("/v1/jobs", params=params)
        if response.status_code != 200:
            return ids, [f"list page: {response.status_code} {response.text[:200]}"]
        page = response.json()
        ids += [item["id"] for item in page["items"]]
        after = page["next_cursor"]
        if not after:
            return ids, []


def check_walk(ids: list[str], must_contain: set[str], may_contain: set[str]) -> list[str]:
    problems = []
    if len(ids) != len(set(ids)):
        problems.append(f"{len(ids) - len(set(ids))} duplicates across cursor pages")
    if missing := must_contain - set(ids):
        problems.append(f"{len(missing)} accepted jobs missing from the pages (gaps)")
    if unknown := set(ids) - may_contain:
        problems.append(f"{len(unknown)} listed jobs that were never accepted")
    return problems


async def drive(args: argparse.Namespace, url: str, key: str, run: str, dataset_id: str, start_workers: Any) -> int:
    import httpx

    limits = httpx.Limits(max_connections=args.concurrency + 16, max_keepalive_connections=args.concurrency + 16)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as client:
        baseline: dict[str, list] = {"latencies": [], "accepted": [], "errors": []}
        began = time.perf_counter()
        await submit(client, run, dataset_id, range(args.baseline), args.concurrency, baseline)
        baseline_s = time.perf_counter() - began

        start_workers()
        load: dict[str, list] = {"latencies": [], "accepted": [], "errors": []}
        polls: dict[str, list] = {"latencies": [], "errors": []}
        stop = asyncio.Event()
        poller = asyncio.create_task(
            poll(client, [baseline["accepted"], load["accepted"]], args.poll_rate, stop, polls)
        )
        began = time.perf_counter()
        half = args.baseline + (args.jobs - args.baseline) // 2
        await submit(client, run, dataset_id, range(args.baseline, half), args.concurrency, load)
        snapshot = set(baseline["accepted"] + load["accepted"])
        middle = asyncio.create_task(walk(client, run))  # while the second half is being submitted
        await submit(client, run, dataset_id, range(half, args.jobs), args.concurrency, load)
        mid_ids, mid_errors = await middle
        load_s = time.perf_counter() - began
        stop.set()
        await poller

        accepted = baseline["accepted"] + load["accepted"]
        final_ids, final_errors = await walk(client, run)
        problems = mid_errors + final_errors
        problems += [f"mid-load walk: {p}" for p in check_walk(mid_ids, snapshot, set(accepted))]
        problems += [f"final walk: {p}" for p in check_walk(final_ids, set(accepted), set(accepted))]
        if len(accepted) != len(set(accepted)):
            problems.append("the API returned the same id for two submissions")
        errors = baseline["errors"] + load["errors"] + polls["errors"]

        statuses: dict[str, int] = {}
        for job_id in random.sample(accepted, min(200, len(accepted))):
            status = (await client.get(f"/v1/jobs/{job_id}")).json()["status"]
            statuses[status] = statuses.get(status, 0) + 1

    base, under, poll_summary = summary(baseline["latencies"]), summary(load["latencies"]), summary(polls["latencies"])
    report = {
        "submitted": args.jobs,
        "accepted": len(accepted),
        "errors": len(errors),
        "baseline_creations_per_s": round(args.baseline / baseline_s, 1),
        "load_creations_per_s": round((args.jobs - args.baseline) / load_s, 1),
        "create_baseline": base,
        "create_under_load": under,
        "status_polls": poll_summary,
        "ratio_create_p99_load_vs_baseline": round(under["p99_ms"] / max(base["p99_ms"], 1e-9), 2),
        "list_walk_mid_load_items": len(mid_ids),
        "list_walk_final_items": len(final_ids),
        "sampled_statuses": statuses,
        "problems": problems,
        "first_errors": errors[:5],
    }
    print(json.dumps(report, indent=1))
    return 1 if errors or problems or len(accepted) != args.jobs else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--poll-rate", type=float, default=20.0, help="status polls per second during the load")
    parser.add_argument("--api-workers", type=int, default=2)
    args = parser.parse_args()

    import redis

    from service.db import make_engine, make_sessionmaker, session_scope, upgrade_database
    from service.keys.service import create_key

    run = secrets.token_hex(3)
    db_name, db_url = create_database()
    scratch = Path(tempfile.mkdtemp(prefix="ld-load-"))
    broker = f"redis://127.0.0.1:6379/{REDIS_DB}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "LINGUDISTILL_DATABASE_URL": db_url, "LINGUDISTILL_BROKER_URL": broker,
           "LINGUDISTILL_STORAGE_URL": (scratch / "storage").as_uri(), "LINGUDISTILL_DATA_DIR": str(scratch),
           "LINGUDISTILL_RATE_LIMIT_PER_S": "100000", "LINGUDISTILL_RATE_LIMIT_BURST": "100000",
           "LINGUDISTILL_WEBHOOK_DELIVERY_ENABLED": "false", "LINGUDISTILL_WORKER_QUEUES": f"load-{run}",
           "LINGUDISTILL_WORKER_SCRATCH_DIR": str(scratch / "work"), "LINGUDISTILL_WORKER_SWEEP_INTERVAL_S": "1",
           }  # fmt: skip
    processes: list[subprocess.Popen[bytes]] = []
    code = 1
    try:
        upgrade_database(db_url)
        sessions = make_sessionmaker(make_engine(db_url))
        with session_scope(sessions) as session:
            key = create_key(session, f"load-{run}").key
        port = free_port()
        processes.append(start_server(env, port, args.api_workers))
        url = f"http://127.0.0.1:{port}"
        import httpx

        upload = httpx.post(f"{url}/v1/datasets", params={"name": "not-ready"}, content=b'{"bad": 1}\n',
                            headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert upload.status_code == 201 and upload.json()["status"] == "invalid", upload.text
        dataset_id = upload.json()["id"]

        def start_workers() -> None:
            for i in range(2):
                log = (scratch / f"worker-{i}.log").open("ab")
                command = [sys.executable, "-m", "worker", "--loglevel=WARNING"]
                processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))

        code = asyncio.run(drive(args, url, key, run, dataset_id, start_workers))
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        client = redis.Redis.from_url(broker)
        for name in client.scan_iter(match=f"*load-{run}*"):
            client.delete(name)
        drop_database(db_name)
        shutil.rmtree(scratch, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
