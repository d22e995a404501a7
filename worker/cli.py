"""`lingudistill worker`: a Celery worker on the configured broker, with the sweeper running inside it."""

from __future__ import annotations

import os

import click


@click.command()
@click.option("--queues", "-Q", default=None, help="Comma-separated queues (GPU kinds) to read; default: gpu.")
@click.option("--concurrency", "-c", default=1, show_default=True, type=int, help="Jobs at once: one per GPU.")
@click.option("--gpus", default=None, help="Comma-separated GPU ids, one per concurrent job (CUDA_VISIBLE_DEVICES).")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.option("--hostname", "-n", default=None, help="Celery node name (default: worker@host:pid).")
def worker(queues: str | None, concurrency: int, gpus: str | None, loglevel: str, hostname: str | None) -> None:
    """Run queued jobs: claim, train in a spawned child, stream metrics, upload checkpoints."""
    if queues:
        os.environ["LINGUDISTILL_WORKER_QUEUES"] = queues
    if gpus:
        os.environ["LINGUDISTILL_WORKER_GPUS"] = gpus
    from worker.celery_app import app  # built after the options are in the environment
    from worker.settings import get_worker_settings

    argv = [
        "worker",
        f"--queues={queues or get_worker_settings().queues}",
        f"--concurrency={concurrency}",
        # solo: the task runs in the worker process itself, which only supervises; threads for several GPUs.
        f"--pool={'solo' if concurrency == 1 else 'threads'}",
        f"--loglevel={loglevel}",
        f"--hostname={hostname or f'worker@%h:{os.getpid()}'}",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv)
