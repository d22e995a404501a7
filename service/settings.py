"""Every setting of the service, read from LINGUDISTILL_* environment variables. Defaults live here only."""

from __future__ import annotations

import json
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SIGNING_SECRET = "dev-insecure-signing-secret"


class Environment(StrEnum):
    development = "development"
    production = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LINGUDISTILL_", extra="ignore")

    environment: Environment = Environment.development
    data_dir: Path = Field(Path(".lingudistill"), description="Embedded mode: SQLite file, broker and storage.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite in data_dir.")
    broker_url: str | None = Field(None, description="Celery broker; default: kombu filesystem:// in data_dir.")
    storage_url: str | None = Field(None, description="file:///dir or s3://bucket/prefix; default: data_dir/storage.")
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    presigned_url_expiry_s: int = Field(900, ge=1, le=7 * 24 * 3600)
    signing_secret: SecretStr = Field(SecretStr(DEFAULT_SIGNING_SECRET), description="Webhook signatures.")

    # limits
    max_request_bytes: int = Field(1_048_576, ge=1024, description="Largest request body except uploads.")
    max_upload_bytes: int = Field(10 * 1024**3, ge=1024, description="Largest dataset upload.")
    rate_limit_per_s: float = Field(50.0, gt=0, description="Sustained requests per second per API key.")
    rate_limit_burst: int = Field(200, ge=1, description="Requests an idle key may send at once.")
    rate_limit_redis_url: str | None = Field(
        None, description="Redis holding the buckets shared by all API processes; default: the broker if Redis."
    )
    max_active_jobs_per_tenant: int = Field(8, ge=1, description="Queued+running jobs before new ones are held.")
    max_sweep_arms: int = Field(
        64, ge=1, le=1024, description="Most arms (jobs) one sweep may create, its control included."
    )
    idempotency_retention_h: int = Field(
        24, ge=1, le=24 * 90, description="Hours an Idempotency-Key is remembered; then the same key creates anew."
    )

    # URI policy
    allowed_schemes: list[str] = Field(default_factory=lambda: ["dataset", "s3", "hf", "file"])
    allowed_s3_buckets: list[str] | None = Field(None, description="None: any bucket.")
    allowed_hf_orgs: list[str] | None = Field(None, description="None: any organisation.")
    allowed_local_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Roots local paths and file:// URIs may name: one path, or a JSON list of paths.",
    )
    allow_private_network: bool = Field(False, description="Let URIs reach loopback/private/link-local hosts.")

    # jobs
    lease_s: int = Field(60, ge=5, description="Lease length; a worker renews it every lease_s / 3.")
    max_attempts: int = Field(3, ge=1, description="Automatic attempts of a job before it fails.")
    sse_poll_interval_s: float = Field(0.5, gt=0, description="How often an event stream polls the database.")
    sse_max_duration_s: float = Field(3600.0, gt=0, description="A stream closes after this; clients resume.")
    sse_keepalive_s: float = Field(15.0, gt=0, description="An idle event stream sends a comment line this often.")
    embedded_workers: int = Field(1, ge=0, description="In-process workers of `serve` without a broker.")

    # webhooks (issue 7); targets obey allow_private_network above, at registration and at every delivery
    webhook_delivery_enabled: bool = Field(True, description="Run the webhook delivery loop in the API process.")
    webhook_poll_interval_s: float = Field(1.0, gt=0, description="How often the loop reads new job events.")
    webhook_timeout_s: float = Field(10.0, gt=0, description="Time limit of one delivery request.")
    webhook_max_attempts: int = Field(8, ge=1, description="Attempts of one delivery before it is marked failed.")
    webhook_retry_base_s: float = Field(5.0, gt=0, description="Backoff: base x 4^(attempt-1), with jitter.")
    webhook_retry_max_s: float = Field(6 * 3600.0, gt=0, description="Longest wait between two attempts.")
    webhook_event_lag_s: float = Field(
        10.0, ge=0, description="The loop re-reads events this recent: an event committed late is not skipped."
    )
    webhook_delivery_retention_days: int = Field(
        30, ge=1, description="Days a delivery and its attempts are kept after it succeeded or failed for good."
    )

    @field_validator("allowed_local_roots", mode="before")
    @classmethod
    def _one_root_or_a_list(cls, value: Any) -> Any:
        """LINGUDISTILL_ALLOWED_LOCAL_ROOTS=/data/models or ='["/data/models", "/data/eval"]'."""
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("["):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list of paths ({exc.msg}); a single path needs no brackets") from None
        return [value] if value.strip() else []

    @model_validator(mode="after")
    def _production_refuses_defaults(self) -> Settings:
        if self.environment is not Environment.production:
            return self
        problems = []
        if self.signing_secret.get_secret_value() == DEFAULT_SIGNING_SECRET:
            problems.append("LINGUDISTILL_SIGNING_SECRET is the default")
        if not self.broker_url:
            problems.append("LINGUDISTILL_BROKER_URL is not set")
        if not self.database_url:
            problems.append("LINGUDISTILL_DATABASE_URL is not set")
        if problems:
            raise ValueError("production settings refused: " + "; ".join(problems))
        return self

    @property
    def database_url_resolved(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'lingudistill.db').resolve()}"

    @property
    def broker_url_resolved(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def rate_limit_redis_url_resolved(self) -> str | None:
        """None: no Redis, so the buckets live in the (single, embedded) API process."""
        if self.rate_limit_redis_url:
            return self.rate_limit_redis_url
        if self.broker_url and self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return None

    @property
    def storage_url_resolved(self) -> str:
        return self.storage_url or (self.data_dir / "storage").resolve().as_uri()

    @property
    def broker_transport_options(self) -> dict[str, Any]:
        if self.broker_url:
            return {}
        folder = str((self.data_dir / "broker").resolve())
        # control_folder too: kombu's default is ./control, relative to whatever directory the process runs in.
        return {
            "data_folder_in": folder,
            "data_folder_out": folder,
            "processed_folder": folder + "-processed",
            "control_folder": folder + "-control",
        }


@lru_cache
def get_settings() -> Settings:
    return Settings()
