"""`lingudistill serve`, `lingudistill db upgrade` and `lingudistill keys create|list|revoke` (entry points in
pyproject)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

SERVICE_EXTRA_HINT = 'install the service extra: pip install "lingudistill[service]"'


class ServeError(click.ClickException):
    """Shown with the `error:` prefix every lingudistill command uses (click's own is `Error:`)."""

    def show(self, file: Any = None) -> None:
        click.secho(f"error: {self.format_message()}", err=True, fg="red")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="uvicorn worker processes.")
@click.option(
    "--embedded-workers",
    type=int,
    default=None,
    help="In-process job workers when no broker is configured (default: LINGUDISTILL_EMBEDDED_WORKERS, 1).",
)
@click.option("--no-migrate", is_flag=True, help="Do not apply migrations before starting.")
def serve(host: str, port: int, workers: int, embedded_workers: int | None, no_migrate: bool) -> None:
    """Run the API (and, with no broker configured, its embedded job workers).

    SIGTERM or Ctrl-C stops the API and every embedded worker with it (their training children follow).
    """
    import os

    require_service_extra()
    from service.db import upgrade_database

    if embedded_workers is not None:  # read by the worker's embedded mode through the settings
        os.environ["LINGUDISTILL_EMBEDDED_WORKERS"] = str(embedded_workers)
    settings = load_settings()
    if not no_migrate:
        upgrade_database(settings.database_url_resolved)
    run_api(host, port, workers, settings.embedded_workers if not settings.broker_url else 0)


def require_service_extra() -> None:
    """The API's own dependencies, checked up front: without them, one line naming the extra, not a traceback."""
    import importlib

    missing = []
    for name in ("fastapi", "uvicorn", "sqlalchemy", "alembic", "celery", "httpx"):
        try:
            importlib.import_module(name)  # serve imports them all anyway
        except ImportError:
            missing.append(name)
    if missing:
        raise ServeError(f"`lingudistill serve` needs {', '.join(missing)}: {SERVICE_EXTRA_HINT}")


def load_settings() -> Any:
    """The settings, or one readable message per bad LINGUDISTILL_* variable instead of a pydantic traceback."""
    from pydantic import ValidationError

    from service.settings import get_settings

    get_settings.cache_clear()
    try:
        return get_settings()
    except ValidationError as exc:
        lines = [
            f"  LINGUDISTILL_{'_'.join(map(str, e['loc'])).upper()}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        ]
        raise ServeError("invalid settings:\n" + "\n".join(lines)) from None


def run_api(host: str, port: int, workers: int, embedded_count: int) -> None:
    import signal

    import uvicorn

    # uvicorn catches SIGTERM, shuts down, then raises the signal again, which by default kills this process
    # before any `finally` runs and leaves the workers orphaned. As an exception it unwinds, and they stop.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    embedded = start_embedded_workers(embedded_count)
    try:
        uvicorn.run("service.app:app_from_env", factory=True, host=host, port=port, workers=workers)
    finally:
        stop_embedded_workers(embedded)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


# --- embedded workers (added by the worker engineer, issue 4) ----------------------------------------------------
# With no broker configured, `serve` runs job workers beside the API on kombu's filesystem broker. They are
# separate `python -m worker` processes (the service never imports the worker package) and stop with the server;
# a job they leave unfinished is re-queued by the next worker's sweeper and resumes from its last checkpoint.


def start_embedded_workers(count: int) -> list[Any]:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    command = [sys.executable, "-m", "worker", "--concurrency=1"]
    return [
        subprocess.Popen([*command, f"--hostname=embedded{i}@%h"], env=env, preexec_fn=_die_with_parent)
        for i in range(count)
    ]


def _die_with_parent() -> None:
    """In the worker, before exec: a SIGKILLed `serve` still takes its workers along (Celery's cold shutdown,
    which stops the pool and so the training child, whose own death signal is tied to the pool process)."""
    import ctypes
    import signal
    import sys

    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGQUIT)


def stop_embedded_workers(processes: list[Any]) -> None:
    import signal
    import subprocess

    for process in processes:
        process.send_signal(signal.SIGQUIT)  # Celery's cold shutdown: do not wait for an hours-long job
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


@click.group()
def db() -> None:
    """The service database."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply the migrations to LINGUDISTILL_DATABASE_URL (default: the embedded SQLite file)."""
    from service.db import upgrade_database
    from service.settings import get_settings

    url = get_settings().database_url_resolved
    upgrade_database(url, revision)
    click.echo(f"database at {_redact(url)} is at {revision}")


@click.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant name (created if new).")
@click.option("--admin", is_flag=True, help="The key sees every tenant's objects.")
def keys_create(tenant: str, admin: bool) -> None:
    """Create an API key; it is printed once, alone on the last line."""
    from service.db import make_engine, make_sessionmaker, session_scope
    from service.keys.service import create_key
    from service.settings import get_settings

    engine = make_engine(get_settings().database_url_resolved)
    with session_scope(make_sessionmaker(engine)) as session:
        new = create_key(session, tenant, admin=admin)
    engine.dispose()
    click.echo(f"created {'admin ' if admin else ''}key {new.prefix}... for tenant {tenant} ({new.tenant_id})")
    click.echo("store it now; it is not shown again:")
    click.echo(new.key)


@keys.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
def keys_list(tenant: str | None, include_revoked: bool) -> None:
    """List API keys, newest first (active ones only unless --all). Never the keys themselves."""
    from service.db import make_engine, make_sessionmaker, session_scope
    from service.keys.service import list_keys
    from service.settings import get_settings

    engine = make_engine(get_settings().database_url_resolved)
    with session_scope(make_sessionmaker(engine)) as session:
        found, _ = list_keys(session, tenant=tenant, include_revoked=include_revoked)
    engine.dispose()
    if not found:
        click.echo("no keys" if include_revoked else "no active keys (--all shows revoked ones)")
        return
    rows = [("ID", "PREFIX", "TENANT", "ADMIN", "CREATED (UTC)", "REVOKED (UTC)")]
    rows += [
        (k.id, f"{k.prefix}…", k.tenant, "yes" if k.admin else "no", _when(k.created_at), _when(k.revoked_at))
        for k in found
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@keys.command("revoke")
@click.argument("key")
def keys_revoke(key: str) -> None:
    """Revoke KEY, a key id or the prefix `keys list` shows; it authenticates nothing from then on."""
    from service.db import make_engine, make_sessionmaker, session_scope
    from service.errors import KeyNotFound
    from service.keys.service import AmbiguousKeyReference, find_key, revoke_key
    from service.settings import get_settings

    engine = make_engine(get_settings().database_url_resolved)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            found = find_key(session, key)
            already = found[0].revoked_at is not None
            revoked = revoke_key(session, found)
    except (KeyNotFound, AmbiguousKeyReference) as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        engine.dispose()
    state = f"was already revoked at {_when(revoked.revoked_at)}" if already else "revoked"
    click.echo(f"key {revoked.id} ({revoked.prefix}…, tenant {revoked.tenant}) {state}")


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
