"""The worker's own knobs, read from LINGUDISTILL_WORKER_* variables. The lease length and attempts are the
service's (LINGUDISTILL_LEASE_S, LINGUDISTILL_MAX_ATTEMPTS): API and worker must agree on them."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LINGUDISTILL_WORKER_", extra="ignore")

    scratch_dir: Path | None = Field(None, description="Local output folders of running jobs; default data_dir/work.")
    queues: str = Field("gpu", description="Comma-separated queues this worker reads (one per GPU kind).")
    gpus: str | None = Field(None, description="Comma-separated GPU ids handed out one per job; None: untouched.")
    sweep_interval_s: float = Field(10.0, gt=0, description="How often the sweeper looks for lost jobs.")
    unsent_after_s: float = Field(
        15.0, gt=0, description="A queued job unclaimed this long is sent again if the broker lost its message."
    )
    cancel_poll_s: float = Field(
        1.0, gt=0, description="How often a running job's row is read for a cancel or a pause."
    )
    cancel_grace_s: float = Field(30.0, ge=0, description="Cooperative stop time before SIGKILL on cancel.")
    stall_timeout_s: float = Field(1800.0, gt=0, description="No new step for this long: the child is stalled.")
    metrics_flush_s: float = Field(1.0, gt=0, description="Step records are written at most this often.")
    stack_dump_wait_s: float = Field(2.0, ge=0, description="Time a stalled child gets to write its stacks.")
    db_outage_limit_s: float = Field(
        300.0, ge=0, description="A database outage is waited out this long before it ends a running attempt."
    )
    final_upload_retry_s: float = Field(
        300.0, ge=0, description="A failing upload of the finished model and report is retried this long."
    )


@lru_cache
def get_worker_settings() -> WorkerSettings:
    return WorkerSettings()
