"""`make demo`: the main job on the embedded default, end to end, with the project's own commands.

1. builds the toy world (a teacher LM, a degraded student VLM, data, and eval suites that ask held-out facts:
   lingudistill/worlds/toy.py);
2. starts `lingudistill serve` with an embedded worker: SQLite, local storage, a broker that needs no server;
3. creates an API key, then `lingudistill submit SPEC --wait`: uploads the datasets, submits, shows progress;
4. prints the recovery report, the web UI's address and key, and what to try next.

Then, at a terminal, it keeps serving (the UI shows the job) until Ctrl-C. Where nobody can press Ctrl-C (stdin
is not a terminal, or CI is set) it stops the service and prints the command that starts it again on the same
data; `--serve` and `--no-serve` choose explicitly:

    python -m service.demo [ROOT] [--serve | --no-serve]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

READY_TIMEOUT_S = 120


@dataclass(frozen=True)
class Demo:
    root: Path
    url: str
    key: str
    job_id: str
    restart: str  # the shell command that serves the same data again


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="lingudistill-demo-"))
    serve = args.serve if args.serve is not None else _interactive()
    started = time.monotonic()
    env = _service_env(root)
    print(f"[1/4] building the toy world in {root / 'toy'}", flush=True)
    spec = _command(["toy", "build", str(root / "toy")], env).strip().splitlines()[-1]
    print("[2/4] starting the service (SQLite, local storage, one embedded worker)", flush=True)
    _command(["db", "upgrade"], env)
    key = _command(["keys", "create", "--tenant", "demo"], env).strip().splitlines()[-1]
    port = _free_port()
    server = _start_server(root, port, env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, server)
        print(f"[3/4] submitting {spec} to {url}", flush=True)
        code, job_id = _submit(root, spec, {**env, "LINGUDISTILL_URL": url, "LINGUDISTILL_API_KEY": key})
        demo = Demo(root, url, key, job_id, _restart_command(env, port))
        _print_results(demo, time.monotonic() - started)
        if serve:
            _serve_until_interrupted(server)
        else:
            print(f"the service stops now (no terminal to press Ctrl-C at). To browse the job again:\n  {demo.restart}")
        return code
    finally:
        _stop(server)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, help="Working folder (default: a new temporary one).")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--serve", dest="serve", action="store_true", default=None, help="Serve until Ctrl-C.")
    group.add_argument("--no-serve", dest="serve", action="store_false", help="Stop once the report is printed.")
    return parser.parse_args(argv)


def _interactive() -> bool:
    """Someone at a terminal who can press Ctrl-C; `make demo` in CI or with redirected input ends on its own."""
    return sys.stdin.isatty() and sys.stdout.isatty() and not os.environ.get("CI")


def _service_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("LINGUDISTILL_DATABASE_URL", "LINGUDISTILL_BROKER_URL", "LINGUDISTILL_STORAGE_URL"):
        env.pop(name, None)  # the demo is the embedded default, whatever this shell has configured
    env["LINGUDISTILL_DATA_DIR"] = str(root / "service")
    # the toy world's student and teacher are local folders: the URI policy must allow that one root
    env["LINGUDISTILL_ALLOWED_LOCAL_ROOTS"] = str(root / "toy")
    return env


def _lingudistill() -> list[str]:
    return [sys.executable, "-m", "lingudistill.cli"]


def _cli_name() -> str:
    """How the user's shell reaches this environment's `lingudistill` (make demo's .venv is usually not on PATH)."""
    script = Path(sys.executable).parent / "lingudistill"
    on_path = shutil.which("lingudistill")
    if not script.exists() or (on_path and Path(on_path).resolve() == script.resolve()):
        return "lingudistill"
    return os.path.relpath(script) if script.is_relative_to(Path.cwd()) else str(script)


def _command(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run([*_lingudistill(), *args], env=env, check=True, stdout=subprocess.PIPE, text=True)
    return result.stdout


def _start_server(root: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(root / "service.log", "w") as log:  # the server keeps its own copy of the file descriptor
        return subprocess.Popen(
            [*_lingudistill(), "serve", "--port", str(port), "--embedded-workers", "1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the demo only; it stops the service itself
        )


def _submit(root: Path, spec: str, env: dict[str, str]) -> tuple[int, str]:
    """`lingudistill submit --wait` (its progress on this terminal); the exit code and the job id it printed."""
    command = [*_lingudistill(), "submit", spec, "--wait", "--report", str(root / "report.md")]
    command += ["--download", str(root / "model")]
    result = subprocess.run(command, env=env, check=False, stdout=subprocess.PIPE, text=True)
    return result.returncode, result.stdout.strip()


def _print_results(demo: Demo, elapsed_s: float) -> None:
    print("[4/4] the recovery report", flush=True)
    report = demo.root / "report.md"
    if report.exists():
        print(report.read_text())
    minutes, seconds = divmod(round(elapsed_s), 60)
    print(f"done in {minutes}m{seconds:02d}s")
    print(f"web UI:    {demo.url}/ui   (API key: {demo.key})")
    print(f"artifacts: {demo.root}   (report.md and its plots, model/, service.log)")
    print("try next, in another terminal:")
    print(f"  export LINGUDISTILL_URL={demo.url} LINGUDISTILL_API_KEY={demo.key}")
    cli, job = _cli_name(), demo.job_id or "JOB"
    print(f"  {cli} jobs get {job}          # status, progress, the resolved spec")
    print(f"  {cli} jobs events {job}       # what happened, step by step")
    print(f"  {cli} jobs download {job} {demo.root / 'model-again'}   # the repaired model, sha256-checked")
    print(f"  {cli} submit {demo.root / 'toy' / 'spec.yaml'} --wait   # another job (edit training.max_steps)")


def _restart_command(env: dict[str, str], port: int) -> str:
    settings = {name: env[name] for name in ("LINGUDISTILL_DATA_DIR", "LINGUDISTILL_ALLOWED_LOCAL_ROOTS")}
    assignments = " ".join(f"{name}={shlex.quote(value)}" for name, value in settings.items())
    return f"{assignments} {_cli_name()} serve --port {port}"


def _serve_until_interrupted(server: subprocess.Popen[bytes]) -> None:
    print("serving until Ctrl-C ...", flush=True)
    try:
        server.wait()
        print(f"the service exited with code {server.returncode}; see service.log")
    except KeyboardInterrupt:
        print("\nstopping the service")


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)  # serve stops its embedded worker before it exits
        server.wait(timeout=30)


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
    sys.exit(main())
