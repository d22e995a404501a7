"""Load benchmark of the service API on Postgres, over loopback only, with bounded request counts.

    python bench/api_load.py [--creations 3000] [--concurrency 16] [--workers 2] [--list-requests 1000] [--rounds 3]
                             [--redis-db 14]

Starts uvicorn on a fresh Postgres database (Redis as the broker when reachable), drives it from a separate load
process with httpx at a fixed concurrency, bulk-inserts 100k jobs, then measures GET /v1/jobs. Prints each
figure as a ratio against its goal: >= 300 creations/s with p99 < 100 ms, and list p99 < 30 ms at 100k jobs, and
against a baseline measured in the same run: GET /healthz (no database, no key) through the same server and client,
which is what this machine allows any route before the route does any work. The baseline and the route run in
turn (`--rounds`), and each ratio is the median over rounds. The list is measured in its default summary view
(no resolved spec) and with view=full.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qsl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_DB = 14  # flushed at the end of a run: give each concurrent user of this Redis its own (--redis-db)
GOALS = {"creations_per_s": 300.0, "create_p99_ms": 100.0, "list_p99_ms": 30.0}
SPEC = {
    "name": "bench",
    "student": "s3://models/student",
    "teacher": "hf://Qwen/Qwen2-1.5B-Instruct@main",
    "mixture": [{"name": "text", "uri": "s3://data/text.jsonl", "weight": 1.0, "distill": True}],
    "training": {"max_steps": 1000},
    "resources": {"queue": "bench"},
    "metadata": {"team": "bench"},
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the load process -----------------------------------------------------------------------------------------


async def drive(url: str, key: str, count: int, concurrency: int, method: str, path: str) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    errors = 0
    remaining = iter(range(count))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits) as client:

        async def one_worker() -> None:
            nonlocal errors
            for i in remaining:
                start = time.perf_counter()
                if method == "POST":
                    response = await client.post(path, json={**SPEC, "name": f"bench-{i}"})
                else:
                    route, _, query = path.partition("?")
                    response = await client.get(route, params={"limit": 50, **dict(parse_qsl(query))})
                latencies.append(time.perf_counter() - start)
                errors += response.status_code >= 400

        began = time.perf_counter()
        await asyncio.gather(*(one_worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return {
        "count": len(latencies),
        "errors": errors,
        "per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 0.99),
    }


def load_main(args: argparse.Namespace) -> None:
    result = asyncio.run(drive(args.url, args.key, args.count, args.concurrency, args.method, args.path))
    print(json.dumps(result))


def run_load(url: str, key: str, count: int, concurrency: int, method: str, path: str) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--role",
        "load",
        "--url",
        url,
        "--key",
        key,
        "--count",
        str(count),
        "--concurrency",
        str(concurrency),
        "--method",
        method,
        "--path",
        path,
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


# --- the orchestrator -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_url(db: int) -> str:
    return f"redis://127.0.0.1:6379/{db}"


def redis_up(url: str) -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except Exception:
        return False


def create_database() -> tuple[str, str]:
    import psycopg

    name = f"ld_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bulk_insert_jobs(url: str, tenant_id: str, count: int) -> None:
    """`count` queued jobs in one INSERT ... SELECT, spread over the past `count` seconds."""
    import psycopg

    sql = """
        INSERT INTO jobs (id, tenant_id, name, status, spec, priority, queue, attempt, max_attempts, metadata,
                          total_steps, created_at, updated_at, dispatched_at)
        SELECT 'job_bulk' || lpad(i::text, 10, '0'), %(tenant)s, 'bulk-' || i, 'succeeded', %(spec)s::jsonb, 5,
               'bench', 1, 3, '{"team": "bench"}'::jsonb, 1000, now() - make_interval(secs => %(n)s - i),
               now(), now()
        FROM generate_series(1, %(n)s) AS i
    """
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        conn.execute(sql, {"tenant": tenant_id, "spec": json.dumps(SPEC), "n": count})
        conn.execute("ANALYZE jobs")


def start_server(env: dict[str, str], port: int, workers: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "service.app:app_from_env",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    import httpx

    for _ in range(200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.terminate()
    raise RuntimeError("the API did not start")


def make_key(env: dict[str, str]) -> tuple[str, str]:
    output = subprocess.run(
        [sys.executable, "-c", "from service.cli import keys; keys()", "create", "--tenant", "bench"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    key = output.strip().splitlines()[-1]
    tenant_id = output.split("(")[-1].split(")")[0]
    return key, tenant_id


def report(name: str, value: float, goal: float, higher_is_better: bool) -> str:
    ratio = value / goal if higher_is_better else goal / value
    verdict = "meets" if ratio >= 1 else "misses"
    return f"{name:<28} {value:9.1f}   goal {goal:7.1f}   ratio {ratio:5.2f}x  ({verdict} the goal)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", default="orchestrate", choices=["orchestrate", "load"])
    parser.add_argument("--creations", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bulk-jobs", type=int, default=100_000)
    parser.add_argument("--list-requests", type=int, default=1000)
    parser.add_argument("--list-concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="each figure and its baseline in turn, this many times")
    parser.add_argument("--redis-db", type=int, default=REDIS_DB)
    for name in ("url", "key", "method", "path"):
        parser.add_argument(f"--{name}")
    parser.add_argument("--count", type=int)
    args = parser.parse_args()
    if args.role == "load":
        load_main(args)
        return
    orchestrate(args)


def orchestrate(args: argparse.Namespace) -> None:
    name, url = create_database()
    data_dir = tempfile.mkdtemp(prefix="ld-bench-")
    broker = redis_url(args.redis_db) if redis_up(redis_url(args.redis_db)) else None
    env = {
        **os.environ,
        "LINGUDISTILL_DATABASE_URL": url,
        "LINGUDISTILL_DATA_DIR": data_dir,
        "LINGUDISTILL_RATE_LIMIT_PER_S": "1000000",
        "LINGUDISTILL_RATE_LIMIT_BURST": "1000000",
        "LINGUDISTILL_MAX_ACTIVE_JOBS_PER_TENANT": "1000000",
        "PYTHONPATH": str(ROOT),
    }
    if broker:
        env["LINGUDISTILL_BROKER_URL"] = broker
    server = None
    try:
        from service.db import upgrade_database

        upgrade_database(url)
        key, tenant_id = make_key(env)
        port = free_port()
        server = start_server(env, port, args.workers)
        base = f"http://127.0.0.1:{port}"
        print(
            f"API: {args.workers} uvicorn worker(s), Postgres, broker {broker or 'embedded filesystem'}; "
            f"{os.cpu_count()} CPU(s) shared with the load process"
        )
        run_load(base, key, 200, args.concurrency, "POST", "/v1/jobs")  # warm-up
        # The floor on this machine: the cheapest route (no database, no key) through the same server and client,
        # measured in turn with each route, so a change in the machine's load moves both halves of a round.
        create = in_turn(base, key, args.creations, args.concurrency, "POST", "/v1/jobs", args.rounds)
        bulk_insert_jobs(url, tenant_id, args.bulk_jobs)
        run_load(base, key, 100, args.list_concurrency, "GET", "/v1/jobs")  # warm-up
        listing = in_turn(base, key, args.list_requests, args.list_concurrency, "GET", "/v1/jobs", args.rounds)
        full = in_turn(base, key, args.list_requests, args.list_concurrency, "GET", "/v1/jobs?view=full", args.rounds)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        drop_database(name)
        if broker:
            import redis

            redis.Redis.from_url(broker).flushdb()
    print(f"{args.rounds} rounds, each: /healthz then the route, same server, client and concurrency")
    print_rounds(f"POST /v1/jobs (concurrency {args.concurrency})", create, "per_s")
    print_rounds(f"GET /v1/jobs limit 50, {args.bulk_jobs} more jobs (concurrency {args.list_concurrency})", listing)
    print_rounds(f"GET /v1/jobs?view=full, the same (concurrency {args.list_concurrency})", full)
    print(
        f"creations at {median_ratio(create, 'per_s'):.2f}x the /healthz rate (goal >= 0.7x); "
        f"list p99 {median_ratio(listing, 'p99_ms'):.2f}x the /healthz p99 (goal <= 3x), "
        f"{median_ratio(full, 'p99_ms'):.2f}x with view=full"
    )
    print(report("creations/s", median_of(create, "per_s"), GOALS["creations_per_s"], True))
    print(report("create p99 (ms)", median_of(create, "p99_ms"), GOALS["create_p99_ms"], False))
    print(report("list p99 (ms)", median_of(listing, "p99_ms"), GOALS["list_p99_ms"], False))


def in_turn(base: str, key: str, count: int, concurrency: int, method: str, path: str, rounds: int) -> list[dict]:
    """`rounds` times: /healthz, then the route, `count` requests each; one {"floor", "route"} per round."""
    return [
        {
            "floor": run_load(base, key, count // rounds, concurrency, "GET", "/healthz"),
            "route": run_load(base, key, count // rounds, concurrency, method, path),
        }
        for _ in range(rounds)
    ]


def median_of(rounds: list[dict], figure: str) -> float:
    return statistics.median(r["route"][figure] for r in rounds)


def median_ratio(rounds: list[dict], figure: str) -> float:
    """The median over rounds of route / baseline for one figure."""
    return statistics.median(r["route"][figure] / r["floor"][figure] for r in rounds)


def print_rounds(title: str, rounds: list[dict], figure: str = "p99_ms") -> None:
    print(title)
    for number, r in enumerate(rounds, start=1):
        route, floor = r["route"], r["floor"]
        print(
            f"  round {number}: {route['count']} requests, {route['errors']} errors: {route['per_s']:.0f}/s, "
            f"p50 {route['p50_ms']:.1f} ms, p99 {route['p99_ms']:.1f} ms | /healthz {floor['per_s']:.0f}/s, "
            f"p99 {floor['p99_ms']:.1f} ms | {figure} ratio {route[figure] / floor[figure]:.2f}x"
        )


if __name__ == "__main__":
    main()
