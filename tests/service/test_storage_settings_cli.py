"""Storage backends, settings, migrations and the CLI."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from service.db import alembic_config, upgrade_database
from service.settings import Settings
from service.storage import InvalidKey, LocalStorage, make_storage
from tests.service.conftest import free_port


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_storage_round_trip(kind, tmp_path, request):
    storage = LocalStorage(tmp_path / "root") if kind == "local" else request.getfixturevalue("s3_storage")
    data = secrets.token_bytes(200_000)
    stored = storage.put_stream("a/b/data.bin", io.BytesIO(data))
    assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.size == len(data)
    source = tmp_path / "f.txt"
    source.write_bytes(b"hello")
    assert storage.put_file("a/c.txt", source).sha256 == hashlib.sha256(b"hello").hexdigest()
    assert storage.exists("a/b/data.bin") and not storage.exists("a/missing")
    assert storage.size("a/b/data.bin") == len(data)
    assert b"".join(storage.iter_bytes("a/b/data.bin", 4096)) == data
    assert storage.list("a") == ["a/b/data.bin", "a/c.txt"]
    storage.delete("a/c.txt")
    assert storage.list("a") == ["a/b/data.bin"]
    storage.check()
    with pytest.raises(InvalidKey):
        storage.put_stream("../escape", [b"x"])
    url = storage.presigned_get_url("a/b/data.bin", 60)
    assert (url is None) == (kind == "local")


def test_s3_multipart_upload_records_sha256(s3_storage, tmp_path):
    from boto3.s3.transfer import TransferConfig

    s3_storage.transfer = TransferConfig(multipart_threshold=5 * 1024**2, multipart_chunksize=5 * 1024**2)
    path = tmp_path / "big.bin"
    path.write_bytes(secrets.token_bytes(11 * 1024**2))
    stored = s3_storage.put_file("big.bin", path)
    head = s3_storage.client.head_object(Bucket=s3_storage.bucket, Key="prefix/big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # three parts
    assert s3_storage.sha256("big.bin") == stored.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_make_storage_from_urls(tmp_path, s3_endpoint):
    assert isinstance(make_storage(Settings(data_dir=tmp_path)), LocalStorage)
    s3 = make_storage(Settings(storage_url="s3://bucket/some/prefix", s3_endpoint_url=s3_endpoint))
    assert s3.bucket == "bucket" and s3.prefix == "some/prefix"


def test_embedded_defaults_and_production_refusals(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert settings.database_url_resolved == f"sqlite:///{tmp_path}/lingudistill.db"
    assert settings.broker_url_resolved == "filesystem://" and settings.storage_url_resolved.startswith("file://")
    with pytest.raises(ValidationError, match=r"SIGNING_SECRET is the default.*BROKER_URL is not set"):
        Settings(environment="production", database_url="postgresql://x/y")
    ok = Settings(
        environment="production",
        database_url="postgresql+psycopg://x/y",
        broker_url="redis://r",
        signing_secret="a-real-secret",
    )
    assert ok.environment.value == "production"


def test_env_prefix(monkeypatch):
    monkeypatch.setenv("LINGUDISTILL_MAX_ACTIVE_JOBS_PER_TENANT", "3")
    monkeypatch.setenv("LINGUDISTILL_ALLOWED_S3_BUCKETS", '["a", "b"]')
    settings = Settings()
    assert settings.max_active_jobs_per_tenant == 3 and settings.allowed_s3_buckets == ["a", "b"]


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_migrations_go_down_and_up_and_match_the_models(kind, tmp_path):
    from alembic import command

    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/m.db"
    else:
        name = f"ld_mig_{secrets.token_hex(4)}"
        with psycopg.connect("postgresql://postgres@127.0.0.1/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1/{name}"
    try:
        upgrade_database(url)
        command.downgrade(alembic_config(url), "base")
        upgrade_database(url)
        command.check(alembic_config(url))  # raises if the models and the migrations differ
    finally:
        if kind == "postgres":
            with psycopg.connect("postgresql://postgres@127.0.0.1/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_cli_db_upgrade_and_keys_create(tmp_path, monkeypatch):
    from service.cli import db, keys
    from service.settings import get_settings

    monkeypatch.setenv("LINGUDISTILL_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        assert runner.invoke(db, ["upgrade"]).exit_code == 0
        result = runner.invoke(keys, ["create", "--tenant", "acme", "--admin"])
        assert result.exit_code == 0, result.output
        key = result.output.strip().splitlines()[-1]
        assert key.startswith("ldk_") and len(key) > 40
        from service.db import make_engine, make_sessionmaker
        from service.keys.service import authenticate

        with make_sessionmaker(make_engine(get_settings().database_url_resolved))() as session:
            principal = authenticate(session, key)
        assert principal is not None and principal.is_admin
    finally:
        get_settings.cache_clear()


def test_lingudistill_cli_discovers_the_service_commands():
    from service.cli import serve

    result = CliRunner().invoke(serve, ["--help"])
    assert result.exit_code == 0 and "--embedded-workers" in result.output


# --- `lingudistill serve` as a process -----------------------------------------------------------------------------
def _descendants(pid: int) -> set[int]:
    """Every live descendant of `pid`, read from /proc (Linux)."""
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                children = {int(c) for c in (task / "children").read_text().split()}
                frontier += sorted(children - found)
                found |= children
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _serve_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINGUDISTILL_")}
    return {**env, "LINGUDISTILL_DATA_DIR": str(tmp_path / "data")}


@pytest.mark.skipif(sys.platform != "linux", reason="reads process trees from /proc")
def test_sigterm_stops_serve_and_its_embedded_workers(tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "lingudistill.cli", "serve", "--port", str(port), "--embedded-workers", "1"]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(command, env=_serve_env(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    family: set[int] = set()
    try:
        # the API answers and the embedded Celery worker (a child of serve) says it is ready
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (_ready(port) and _worker_ready(tmp_path / "serve.log")):
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.5)
        family = _descendants(server.pid)
        assert family, f"the embedded worker did not start: {(tmp_path / 'serve.log').read_text()}"

        server.send_signal(signal.SIGTERM)  # what `docker stop` and systemd send
        server.wait(timeout=60)
        survivors = [pid for pid in family if _alive(pid)]
        assert survivors == [], f"still running after SIGTERM: {survivors}"
    finally:
        for pid in [server.pid, *family, *_descendants(server.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        server.wait()
        log.close()


def _worker_ready(log: Path) -> bool:
    return " ready." in log.read_text()  # Celery's "celery@host ready."


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


WITHOUT_THE_EXTRA = """
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):  # as on a machine without the service extra
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("uvicorn", "fastapi", "httpx"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Missing())
from lingudistill.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize(("command", "exit_code"), [(["serve"], 1), (["submit", "spec.yaml"], 3)])
def test_a_command_without_the_service_extra_names_it(tmp_path, command, exit_code):
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_EXTRA, *command],
        env=_serve_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == exit_code  # submit: 3, "no verdict", never 2 ("the job failed") to a CI gate
    assert result.stderr.startswith("error: ")
    assert 'pip install "lingudistill[service]"' in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("value", "roots"),
    [("/data/models", ["/data/models"]), ('["/data/models", "/data/eval"]', ["/data/models", "/data/eval"]), ("", [])],
)
def test_allowed_local_roots_take_one_path_or_a_json_list(monkeypatch, value, roots):
    monkeypatch.setenv("LINGUDISTILL_ALLOWED_LOCAL_ROOTS", value)
    assert Settings().allowed_local_roots == [Path(root) for root in roots]


def test_serve_names_a_bad_setting_in_one_message(tmp_path):
    env = {**_serve_env(tmp_path), "LINGUDISTILL_ALLOWED_LOCAL_ROOTS": '["/data", '}
    command = [sys.executable, "-m", "lingudistill.cli", "serve", "--port", str(free_port())]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: invalid settings:\n  LINGUDISTILL_ALLOWED_LOCAL_ROOTS: ")
    assert "a single path needs no brackets" in result.stderr and "Traceback" not in result.stderr
