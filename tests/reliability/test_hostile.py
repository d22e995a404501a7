"""Hostile inputs: each is a clear 4xx or a failed job with a reason, in bounded memory, and runs no code.

Unit-level cases already proven elsewhere (not repeated here): URI-policy spellings of loopback/mapped/decimal/
private-DNS addresses (tests/service/test_uri_policy.py), image paths leaving the dataset folder and bombs at the
decoder (tests/data/test_records.py), 413 on a declared-too-large body in-process (tests/service/test_errors.py)."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import pickle
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from service.db import session_scope
from service.keys.service import create_key
from service.lifecycle import FailureReason, JobStatus
from tests.service.conftest import free_port
from tests.worker.conftest import ROOT, Stack, job_spec, wait_until

GIB = 1024**3

# --- SSRF through the API --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "https://127.0.0.1/model",  # loopback
        "https://[::ffff:127.0.0.1]/model",  # IPv6-mapped loopback
        "https://2130706433/model",  # decimal 127.0.0.1
        "https://[::ffff:169.254.169.254]/latest/meta-data",  # mapped cloud metadata
        "https://localhost/model",  # a DNS name resolving to a private address (the real resolver)
        "file:///etc/passwd",  # outside the allowed local roots
        "/proc/self/environ",
    ],
)
def test_ssrf_uris_in_a_job_spec_are_a_422_naming_the_field(make_client, new_key, spec_body, uri: str) -> None:
    client = make_client(new_key(), allowed_schemes=["dataset", "s3", "hf", "file", "https"])
    response = client.post("/v1/jobs", json=spec_body(student=uri))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "uri_not_allowed" and problem["errors"][0]["loc"] == ["body", "student"]
    assert client.get("/v1/jobs").json()["items"] == []  # nothing was created


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/x", "http://[::ffff:10.0.0.1]/x", "http://2852039166/x", "http://localhost/x",
     "http://169.254.169.254/latest/meta-data", "file:///etc/passwd"],
)  # fmt: skip
def test_ssrf_webhook_targets_are_refused_at_registration(client, url: str) -> None:
    response = client.post("/v1/webhooks", json={"url": url})
    assert response.status_code == 422, response.text


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str]
    location: str = ""

    def do_POST(self) -> None:
        self.hits.append(self.path)
        self.send_response(302 if self.location else 200)
        if self.location:
            self.send_header("Location", self.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args: object) -> None: ...


def _serve(handler: type[_Recorder]) -> tuple[http.server.HTTPServer, int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def test_a_webhook_redirect_to_a_metadata_address_is_never_followed() -> None:
    import httpx

    from service.webhooks.delivery import Outgoing, post_signed

    metadata = type("Metadata", (_Recorder,), {"hits": []})  # stands in for 169.254.169.254
    metadata_server, metadata_port = _serve(metadata)
    redirect = type("Redirect", (_Recorder,), {"hits": [], "location": f"http://127.0.0.1:{metadata_port}/latest"})
    redirect_server, redirect_port = _serve(redirect)
    try:
        outgoing = Outgoing("dlv_1", 1, f"http://127.0.0.1:{redirect_port}/hook", "whsec_" + "A" * 32, {"type": "x"})
        with httpx.Client(follow_redirects=False, trust_env=False, timeout=5) as http:
            # allow_private only so the loopback stand-in target is reachable at all
            result = post_signed(http, outgoing, allow_private=True)
            refused = post_signed(http, outgoing, allow_private=False)
    finally:
        metadata_server.shutdown()
        redirect_server.shutdown()
    assert not result.ok and "not followed" in (result.error or "")
    assert redirect.hits == ["/hook"] and metadata.hits == []  # the redirect target was never contacted
    assert not refused.ok and "non-public" in (refused.error or "")  # and by default loopback is refused outright


# --- a 10 GB request body against a real server process ----------------------------------------------------------


@pytest.fixture
def server_process(pg_url: str, live_sessions, tmp_path: Path) -> Iterator[tuple[int, int, str]]:  # type: ignore[no-untyped-def]
    """uvicorn in its own process (so its memory can be measured): (port, pid, API key)."""
    with session_scope(live_sessions) as session:
        key = create_key(session, "hostile").key
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LINGUDISTILL_DATABASE_URL": pg_url,
           "LINGUDISTILL_DATA_DIR": str(tmp_path), "LINGUDISTILL_MAX_UPLOAD_BYTES": str(8 * 1024**2),
           "LINGUDISTILL_WEBHOOK_DELIVERY_ENABLED": "false", "LINGUDISTILL_RATE_LIMIT_BURST": "10000"}  # fmt: skip
    command = [sys.executable, "-m", "uvicorn", "--factory", "service.app:app_from_env", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _connects(port), 60, "the API process")
        yield port, process.pid, key
    finally:
        process.terminate()
        process.wait(15)


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _rss_hwm_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


def _send_huge(port: int, path: str, key: str, declared: int | None, total: int) -> tuple[int, int]:
    """Send headers, then up to `total` body bytes (1 MiB chunks, chunked encoding unless `declared`) until the server
    answers or closes. Returns (HTTP status, body bytes sent)."""
    headers = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Authorization: Bearer {key}",
               "Content-Type: application/json"]  # fmt: skip
    headers.append(f"Content-Length: {declared}" if declared is not None else "Transfer-Encoding: chunked")
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
    chunk = b"x" * (1024 * 1024)
    frame = chunk if declared is not None else f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent, response = 0, b""
    deadline = time.monotonic() + 60
    while sent < total and time.monotonic() < deadline:
        if select.select([sock], [], [], 0)[0]:  # the server answered (or closed) before the body ended
            with contextlib.suppress(OSError):
                response = sock.recv(65536)
            break
        try:
            sock.sendall(frame)  # blocking: a frame is never cut in half
        except OSError:  # the server closed the connection or stopped reading: it refused the rest
            break
        sent += len(chunk)
    sock.settimeout(10)
    try:
        while b"\r\n" not in response:
            data = sock.recv(65536)
            if not data:
                break
            response += data
    except OSError:
        pass
    sock.close()
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0
    return status, sent


def test_a_10_gb_body_is_refused_early_with_413_in_bounded_memory(server_process: tuple[int, int, str]) -> None:
    port, pid, key = server_process
    before = _rss_hwm_kib(pid)
    ten_gb = 10 * 10**9
    # declared: refused on the headers alone, before a byte of body
    assert _send_huge(port, "/v1/jobs", key, declared=ten_gb, total=0) == (413, 0)
    assert _send_huge(port, "/v1/datasets?name=big", key, declared=ten_gb, total=0) == (413, 0)
    # streamed without a length: refused once past the limit (1 MiB JSON, 8 MiB upload here), not after 10 GB
    status, sent = _send_huge(port, "/v1/jobs", key, declared=None, total=ten_gb)
    assert status == 413 and sent < 64 * 1024**2, (status, sent)
    status, sent = _send_huge(port, "/v1/datasets?name=big", key, declared=None, total=ten_gb)
    assert status == 413 and sent < 128 * 1024**2, (status, sent)
    growth_mib = (_rss_hwm_kib(pid) - before) / 1024
    assert growth_mib < 64, f"the server's peak RSS grew by {growth_mib:.0f} MiB"
    with socket.create_connection(("127.0.0.1", port)) as sock:  # and it still answers
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")


# --- bad datasets through the real worker ---------------------------------------------------------------------------


def test_image_path_traversal_in_an_uploaded_dataset_is_listed_as_a_problem(client) -> None:
    lines = [{"prompt": "p", "response": "r", "images": ["../../../../etc/passwd"]},
             {"prompt": "p", "response": "r", "images": ["/etc/shadow"]}]  # fmt: skip
    body = "\n".join(json.dumps(line) for line in lines).encode()
    response = client.post("/v1/datasets", params={"name": "evil"}, content=body)
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["status"] == "invalid"
    per_line = [p for p in dataset["problems"] if ":" in p["origin"]]
    assert [p["origin"] for p in per_line] == ["upload:1", "upload:2"], dataset["problems"]
    assert all("leaves the dataset folder" in p["message"] for p in per_line), per_line


def _bomb_png(path: Path, side: int) -> None:
    """A tiny file that decodes to side x side pixels (a palette PNG of one colour compresses ~1000:1)."""
    Image.new("P", (side, side), 0).save(path, optimize=True)


def test_a_decompression_bomb_and_a_huge_image_fail_the_job_with_a_reason(
    stack: Stack, tiny_world: Path, private_queue: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    _bomb_png(data / "images" / "bomb.png", 20_000)  # 400 Mpx: past the 40 Mpx limit, a few hundred KB on disk
    assert (data / "images" / "bomb.png").stat().st_size < 2 * 1024**2
    records = [{"prompt": "what colour?", "response": "red .", "images": ["images/bomb.png"]}]
    (data / "vqa.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    spec = job_spec(tiny_world, private_queue)
    spec["mixture"][1]["uri"] = str(data / "vqa.jsonl")
    worker = stack.worker(queue=private_queue)
    job_id = stack.submit(spec)
    job = stack.wait_status(job_id, {JobStatus.failed, JobStatus.succeeded}, timeout=120)
    assert job.status is JobStatus.failed and job.failure_reason is FailureReason.bad_input
    assert "bomb.png" in (job.failure_message or "") and "pixels" in (job.failure_message or ""), job.failure_message
    assert job.attempt == 1  # bad input is not retried
    assert worker.process is not None and worker.process.poll() is None


# --- a crafted pickle in a checkpoint, and a model that needs remote code --------------------------------------------


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_pickle_in_training_state_is_refused_and_runs_no_code(tiny_world: Path, tmp_path: Path) -> None:
    import torch

    from lingudistill.checkpoint import CheckpointError, latest_valid, write_manifest
    from lingudistill.pipeline import run_job
    from lingudistill.spec import JobSpec

    torch.set_num_threads(1)
    spec = JobSpec.model_validate(job_spec(tiny_world, "hostile", max_steps=3, checkpoint_every=2))
    out = tmp_path / "run"
    run_job(spec, out, callbacks=[])
    folder = latest_valid(out / "checkpoints")
    assert folder is not None
    marker = tmp_path / "pwned"
    state = {"step": 2, "evil": _Payload(marker)}
    with (folder / "training_state.pt").open("wb") as handle:
        torch.save(state, handle)
    pickle.loads(pickle.dumps(_Payload(marker)))  # the payload is live: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    write_manifest(folder, 2)  # the attacker also fixes the manifest, so the checkpoint "verifies"

    longer = spec.model_copy(update={"training": spec.training.model_copy(update={"max_steps": 5})})
    with pytest.raises(CheckpointError, match="not a loadable training state") as caught:
        run_job(longer, out, resume=True, callbacks=[])
    assert "training_state.pt" in str(caught.value)
    assert not marker.exists(), "the pickle ran code"
    from lingudistill.errors import classify

    assert classify(caught.value) in ("bad_input", "infrastructure")


def test_a_model_that_needs_remote_code_is_refused_with_a_clear_message(tiny_world: Path, tmp_path: Path) -> None:
    import shutil

    from lingudistill.errors import classify
    from lingudistill.models.loading import ModelLoadError, load_student

    marker = tmp_path / "remote-code-ran"
    # an architecture that exists only as remote code: refused, with the reason
    folder = tmp_path / "evil"
    shutil.copytree(tiny_world / "student", folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="evil_vlm", auto_map={"AutoConfig": "modeling_evil.EvilConfig",
                                                   "AutoModelForImageTextToText": "modeling_evil.Evil"})  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(ModelLoadError, match="remote code, which is never trusted") as caught:
        load_student(str(folder))
    assert classify(caught.value) == "bad_input"  # the job fails with reason bad_input, and is not retried
    assert not marker.exists(), "remote code ran"

    # a known architecture that also ships an auto_map: its code is ignored, the built-in class is used
    config.update(model_type=json.loads((tiny_world / "student" / "config.json").read_text())["model_type"])
    (folder / "config.json").write_text(json.dumps(config))
    student = load_student(str(folder))
    assert type(student.model).__module__.startswith("transformers.models.")
    assert not marker.exists(), "remote code ran"
