"""`make demo`: the main job on the embedded default, end to end, with the project's own commands.

1. builds the toy world (a teacher LM, a degraded student VLM, data and eval suites: lingudistill/toy.py);
2. starts `lingudistill serve` with an embedded worker: SQLite, local storage, a broker that needs no server;
3. creates an API key, then `lingudistill submit SPEC --wait`: uploads the datasets, submits, shows progress;
4. prints the recovery report, where the UI and the artifacts are, and stops the service.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

READY_TIMEOUT_S = 120


def main(root: Path | None = None) -> int:
    root = root or Path(tempfile.mkdtemp(prefix="lingudistill-demo-"))
    env = _service_env(root)
    print(f"[1/4] building the toy world in {root / 'toy'}", flush=True)
    spec = _command(["toy", "build", str(root / "toy")], env).strip().splitlines()[-1]
    print("[2/4] starting the service (SQLite, local storage, one embedded worker)", flush=True)
    _command(["db", "upgrade"], env)
    key = _command(["keys", "create", "--tenant", "demo"], env).strip().splitlines()[-1]
    port = _free_port()
    server = subprocess.Popen(
        [*_lingudistill(), "serve", "--port", str(port), "--embedded-workers", "1"],
        env=env,
        stdout=open(root / "service.log", "w"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, server)
        print(f"[3/4] submitting {spec} to {url}", flush=True)
        client_env = {**env, "LINGUDISTILL_URL": url, "LINGUDISTILL_API_KEY": key}
        report = root / "report.md"
        submit = [
            *_lingudistill(),
            "submit",
            spec,
            "--wait",
            "--report",
            str(report),
            "--download",
            str(root / "model"),
        ]
        code = subprocess.run(submit, env=client_env, check=False).returncode
        print("[4/4] the recovery report", flush=True)
        if report.exists():
            print(report.read_text())
        print(f"UI: {url}/ui (API key: {key}); artifacts: {root} (model/, report.md, service.log)")
        print("the service stops now; restart it with the same LINGUDISTILL_DATA_DIR to browse the job")
        return code
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _service_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("LINGUDISTILL_DATABASE_URL", "LINGUDISTILL_BROKER_URL", "LINGUDISTILL_STORAGE_URL"):
        env.pop(name, None)  # the demo is the embedded default, whatever this shell has configured
    env["LINGUDISTILL_DATA_DIR"] = str(root / "service")
    # the toy world's student and teacher are local folders: the URI policy must allow that one root
    env["LINGUDISTILL_ALLOWED_LOCAL_ROOTS"] = json.dumps([str(root / "toy")])
    return env


def _lingudistill() -> list[str]:
    return [sys.executable, "-m", "lingudistill.cli"]


def _command(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run([*_lingudistill(), *args], env=env, check=True, stdout=subprocess.PIPE, text=True)
    return result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the service exited with code {server.returncode}; see its log")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the service was not ready after {READY_TIMEOUT_S} s")


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
