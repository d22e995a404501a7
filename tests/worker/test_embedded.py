"""The embedded default: `lingudistill serve` with no variables set (SQLite, local storage, filesystem broker)
runs the toy job end to end with its own worker process, and stops that worker with the server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from service.db import make_engine, make_sessionmaker, session_scope
from service.keys.service import create_key
from tests.service.conftest import free_port
from tests.worker.conftest import ROOT, job_spec, pid_alive, wait_until


@contextmanager
def serve_embedded(tiny_world: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, httpx.Client, str]]:
    """`lingudistill serve --embedded-workers 1` with no LINGUDISTILL_ variables but the data folder and the world's
    root: the server process, a client with a fresh key (its base_url is the server's) and that key; SIGINT after."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINGUDISTILL_")}
    env.update(
        PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", LINGUDISTILL_DATA_DIR=str(tmp_path / "data"),
        LINGUDISTILL_ALLOWED_LOCAL_ROOTS=json.dumps([str(tiny_world)]),
    )  # fmt: skip
    command = [sys.executable, "-c", "from service.cli import serve; serve()", "--port", str(port)]
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen([*command, "--embedded-workers", "1"], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        key = _key(tmp_path)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"})
        wait_until(lambda: _up(client), 60, "the server")
        yield server, client, key
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)


def test_serve_runs_a_job_with_embedded_workers(tiny_world: Path, tmp_path: Path) -> None:
    with serve_embedded(tiny_world, tmp_path) as (server, client, _):
        response = client.post("/v1/jobs", json=job_spec(tiny_world, "gpu"))
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]

        final = wait_until(lambda: _final(client, job_id), 120, "the job to finish", interval=0.5)
        assert final["status"] == "succeeded", final
        checkpoints = client.get(f"/v1/jobs/{job_id}/checkpoints").json()
        assert [c["step"] for c in checkpoints["items"]] == [2, 4]
        assert (tmp_path / "data" / "storage" / "jobs" / job_id / "model" / "config.json").is_file()
        workers = _worker_pids(server.pid)
        assert len(workers) == 1
    assert not any(pid_alive(pid) for pid in workers)  # stopped with the server


def _key(tmp_path: Path) -> str:
    from service.db import upgrade_database

    url = f"sqlite:///{tmp_path / 'data' / 'lingudistill.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    with session_scope(make_sessionmaker(engine)) as session:
        key = create_key(session, "embedded").key
    engine.dispose()
    return key


def _up(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def _final(client: httpx.Client, job_id: str) -> dict | None:
    body = client.get(f"/v1/jobs/{job_id}").json()
    return body if body["status"] in ("succeeded", "failed", "cancelled") else None


def _worker_pids(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found
