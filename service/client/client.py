"""The typed Python client of the LinguDistill API (httpx).

    with LinguDistillClient() as api:                      # LINGUDISTILL_URL, LINGUDISTILL_API_KEY
        job = api.create_job(load_spec("spec.yaml"))       # always sent with an Idempotency-Key
        for event in api.stream_events(job.id):            # SSE; reconnects with Last-Event-ID, ends when final
            print(event.type, event.data)
        job = api.wait(job.id, on_progress=print)
        report = api.get_report(job.id)

Retry policy: 429 (after its Retry-After), 503, a 409 saying that an earlier request with the same Idempotency-Key
is still in flight, and connection errors are retried with exponential backoff and jitter; no other status is.
A request that may have reached the server (a read error after sending) is retried only when repeating it is
harmless: GET/DELETE, or a POST carrying an Idempotency-Key.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx

from lingudistill.spec import JobSpec
from service.client.models import ApiConnectionError, ApiError, ChecksumMismatch, LinguDistillError, Report
from service.datasets.schemas import DatasetOut, DatasetPage
from service.jobs.schemas import (
    CheckpointList,
    CheckpointOut,
    EventOut,
    EventPage,
    JobOut,
    JobPage,
    MetricsOut,
    ModelOut,
)
from service.lifecycle import JobStatus
from service.sweeps.schemas import SweepOut, SweepPage, SweepReport
from service.webhooks.schemas import DeliveryPage, WebhookCreate, WebhookCreated, WebhookOut, WebhookPage

DEFAULT_URL = "http://127.0.0.1:8000"
T = TypeVar("T")
RETRY_STATUSES = frozenset({429, 503})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
CHUNK = 1 << 20
MODEL_ONLY_EXCLUDES = ("training_state.pt", "dcp/")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 300.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Before retry number `attempt` (1-based): Retry-After when the server sent one, else exponential
        backoff with jitter (half fixed, half random, so clients that failed together do not retry together)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        cap = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return cap / 2 + random.uniform(0, cap / 2)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(when.tzinfo)).total_seconds(), 0.0)


@dataclass(frozen=True)
class SseMessage:
    id: str | None
    event: str | None
    data: str
    retry_ms: int | None


def parse_sse(lines: Iterable[str]) -> Iterator[SseMessage]:
    """Server-Sent Events framing (the WHATWG rules that matter here): fields until a blank line."""
    event_id = event = retry = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data or retry is not None:
                yield SseMessage(event_id, event, "\n".join(data), retry)
            event = retry = None
            data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
        elif field == "event":
            event = value
        elif field == "retry" and value.isdigit():
            retry = int(value)


class LinguDistillClient:
    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = (base_url or os.environ.get("LINGUDISTILL_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key or os.environ.get("LINGUDISTILL_API_KEY")
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        headers = {"User-Agent": "lingudistill-client/1"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)
        self._transport = transport

    def __enter__(self) -> LinguDistillClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- the request pipeline ------------------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        content: Callable[[], Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send with the retry policy; raise ApiError for an error status, ApiConnectionError when unreachable."""
        repeatable = method in IDEMPOTENT_METHODS or "Idempotency-Key" in (headers or {})
        for attempt in range(1, self.retry.max_attempts + 1):
            last = attempt == self.retry.max_attempts
            try:
                body = content() if content is not None else None
                response = self._http.request(method, path, params=params, json=json, content=body, headers=headers)
            except httpx.TransportError as exc:
                never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if last or not (never_sent or repeatable):
                    raise ApiConnectionError(f"{method} {self.base_url}{path}: {type(exc).__name__}: {exc}") from exc
                self._sleep(self.retry.delay(attempt))
                continue
            if (response.status_code in RETRY_STATUSES or _first_still_in_flight(response)) and not last:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                response.close()
                self._sleep(self.retry.delay(attempt, retry_after))
                continue
            if response.is_error:
                raise ApiError.from_response(response)
            return response
        raise AssertionError("unreachable")

    def _get(self, path: str, params: Any = None) -> Any:
        return self._request("GET", path, params=params).json()

    # --- operations ----------------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._get("/healthz")

    def ready(self) -> dict[str, Any]:
        return self._get("/readyz")

    # --- jobs ------------------------------------------------------------------------------------------------------
    def create_job(self, spec: JobSpec | dict[str, Any], *, idempotency_key: str | None = None) -> JobOut:
        """Submit a job. The Idempotency-Key (generated unless given) is the same on every retry of this call,
        so a retried request can never create a second job."""
        return self.submit_job(spec, idempotency_key=idempotency_key).job

    def submit_job(self, spec: JobSpec | dict[str, Any], *, idempotency_key: str | None = None) -> Submission:
        """`create_job`, also telling whether the server replayed an earlier submission with the same key (and
        body): then the job is the one that submission created, as it was then."""
        headers = {"Idempotency-Key": idempotency_key or f"ldc-{uuid.uuid4()}"}
        response = self._request("POST", "/v1/jobs", json=job_body(spec), headers=headers)
        replayed = response.headers.get("Idempotent-Replayed", "").lower() == "true"
        return Submission(JobOut.model_validate(response.json()), replayed)

    def list_jobs(
        self,
        *,
        limit: int = 50,
        after: str | None = None,
        status: Iterable[JobStatus | str] = (),
        name: str | None = None,
        metadata: dict[str, str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        view: Literal["summary", "full"] = "summary",
    ) -> JobPage:
        """A page of jobs, newest first. The summary view leaves each job's spec out (None); view="full" has it."""
        params: dict[str, Any] = {"limit": limit, "after": after, "name": name, "view": view}
        params["status"] = [str(s) for s in status] or None
        params["metadata"] = [f"{k}={v}" for k, v in (metadata or {}).items()] or None
        params["created_after"] = created_after.isoformat() if created_after else None
        params["created_before"] = created_before.isoformat() if created_before else None
        return JobPage.model_validate(self._get("/v1/jobs", _clean(params)))

    def iter_jobs(self, **filters: Any) -> Iterator[JobOut]:
        """Every job matching the filters, newest first, following the cursor."""
        after = None
        while True:
            page = self.list_jobs(after=after, **filters)
            yield from page.items
            if not page.has_more:
                return
            after = page.next_cursor

    def get_job(self, job_id: str) -> JobOut:
        return JobOut.model_validate(self._get(f"/v1/jobs/{job_id}"))

    def cancel_job(self, job_id: str) -> JobOut:
        return JobOut.model_validate(self._request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def retry_job(self, job_id: str) -> JobOut:
        return JobOut.model_validate(self._request("POST", f"/v1/jobs/{job_id}/retry").json())

    def pause_job(self, job_id: str) -> JobOut:
        """Pause at a checkpoint, freeing the GPU: `pausing` until the worker saved it, then `paused` (a queued job
        is paused at once). Pausing a pausing or paused job answers it unchanged."""
        return JobOut.model_validate(self._request("POST", f"/v1/jobs/{job_id}/pause").json())

    def resume_job(self, job_id: str) -> JobOut:
        """Queue a paused job again; it continues from the pause's checkpoint."""
        return JobOut.model_validate(self._request("POST", f"/v1/jobs/{job_id}/resume").json())

    def list_events(self, job_id: str, *, after: int | None = None, limit: int = 100) -> EventPage:
        return EventPage.model_validate(
            self._get(f"/v1/jobs/{job_id}/events", _clean({"after": after, "limit": limit}))
        )

    def get_metrics(
        self,
        job_id: str,
        names: Iterable[str] = (),
        *,
        step_min: int | None = None,
        step_max: int | None = None,
        max_points: int = 1000,
    ) -> MetricsOut:
        params = {"names": list(names) or None, "step_min": step_min, "step_max": step_max, "max_points": max_points}
        return MetricsOut.model_validate(self._get(f"/v1/jobs/{job_id}/metrics", _clean(params)))

    def list_checkpoints(self, job_id: str) -> CheckpointList:
        return CheckpointList.model_validate(self._get(f"/v1/jobs/{job_id}/checkpoints"))

    def get_report(self, job_id: str) -> Report:
        """The recovery report; ApiError with code `report_not_ready` until the job has one."""
        return Report.model_validate(self._get(f"/v1/jobs/{job_id}/report"))

    def get_report_file(self, job_id: str, name: str = "report.md") -> bytes:
        """One stored report file (report.md, report.json, plots), as rendered by the worker."""
        return self._request("GET", f"/v1/jobs/{job_id}/report/files/{name}").content

    # --- sweeps -----------------------------------------------------------------------------------------------------
    def submit_sweep(self, body: dict[str, Any], *, idempotency_key: str | None = None) -> SweepSubmission:
        """POST /v1/sweeps (a SweepIn as JSON); the Idempotency-Key makes a retried call return the same sweep."""
        headers = {"Idempotency-Key": idempotency_key or f"ldc-{uuid.uuid4()}"}
        response = self._request("POST", "/v1/sweeps", json=body, headers=headers)
        replayed = response.headers.get("Idempotent-Replayed", "").lower() == "true"
        return SweepSubmission(SweepOut.model_validate(response.json()), replayed)

    def get_sweep(self, sweep_id: str) -> SweepOut:
        return SweepOut.model_validate(self._get(f"/v1/sweeps/{sweep_id}"))

    def list_sweeps(self, *, limit: int = 20, after: str | None = None) -> SweepPage:
        return SweepPage.model_validate(self._get("/v1/sweeps", _clean({"limit": limit, "after": after})))

    def cancel_sweep(self, sweep_id: str) -> SweepOut:
        return SweepOut.model_validate(self._request("POST", f"/v1/sweeps/{sweep_id}/cancel").json())

    def get_sweep_report(self, sweep_id: str) -> SweepReport:
        return SweepReport.model_validate(self._get(f"/v1/sweeps/{sweep_id}/report"))

    def wait_sweep(
        self,
        sweep_id: str,
        *,
        on_progress: Callable[[SweepOut], None] | None = None,
        poll_interval_s: float = 2.0,
        timeout_s: float | None = None,
    ) -> SweepOut:
        """Poll until the sweep has ended (every arm final, the best arm chosen). TimeoutError after `timeout_s`."""
        return self._poll(
            lambda: self.get_sweep(sweep_id),
            lambda sweep: sweep.status != "running",
            lambda sweep: f"sweep {sweep_id} is still running after {timeout_s} s",
            on_progress,
            poll_interval_s,
            timeout_s,
        )

    # --- following a job -------------------------------------------------------------------------------------------
    def stream_events(
        self, job_id: str, *, after: int | None = None, read_timeout_s: float = 60.0
    ) -> Iterator[EventOut]:
        """The job's events, live (SSE). A dropped stream is reopened with Last-Event-ID, so no event is lost or
        repeated; the iterator ends once the job is final and its events are all delivered."""
        last_id, failures, retry_ms = after, 0, 1000
        timeout = httpx.Timeout(10.0, read=read_timeout_s)
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = str(last_id)
            try:
                with self._http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout) as stream:
                    if stream.status_code in RETRY_STATUSES:
                        raise _Busy(parse_retry_after(stream.headers.get("Retry-After")))
                    if stream.is_error:
                        raise ApiError.from_response(stream)
                    for message in parse_sse(stream.iter_lines()):
                        retry_ms = message.retry_ms or retry_ms
                        if message.data:
                            event = EventOut.model_validate_json(message.data)
                            last_id, failures = event.id, 0
                            yield event
            except (httpx.TransportError, _Busy) as exc:
                failures += 1
                if failures >= self.retry.max_attempts:
                    raise ApiConnectionError(f"event stream of {job_id}: {exc}") from exc
                retry_after = exc.retry_after if isinstance(exc, _Busy) else None
                self._sleep(max(retry_ms / 1000, self.retry.delay(failures, retry_after)))
                continue
            # the server ended the stream: the job is final, or the stream reached its maximum duration
            if self.get_job(job_id).status.is_final:
                yield from self.iter_events(job_id, after=last_id)
                return

    def iter_events(self, job_id: str, *, after: int | None = None) -> Iterator[EventOut]:
        """Every logged event after `after` (no waiting), following the pages."""
        while True:
            page = self.list_events(job_id, after=after, limit=1000)
            yield from page.items
            if not page.items:
                return
            after = page.items[-1].id

    def wait(
        self,
        job_id: str,
        *,
        on_progress: Callable[[JobOut], None] | None = None,
        poll_interval_s: float = 2.0,
        timeout_s: float | None = None,
    ) -> JobOut:
        """Poll until the job is final (a paused job is not: the wait goes on until it is resumed and ends);
        `on_progress(job)` sees every poll. TimeoutError after `timeout_s`."""
        return self._poll(
            lambda: self.get_job(job_id),
            lambda job: job.status.is_final,
            lambda job: f"job {job_id} is still {job.status.value} after {timeout_s} s",
            on_progress,
            poll_interval_s,
            timeout_s,
        )

    def _poll(
        self,
        fetch: Callable[[], T],
        done: Callable[[T], bool],
        still: Callable[[T], str],
        on_progress: Callable[[T], None] | None,
        poll_interval_s: float,
        timeout_s: float | None,
    ) -> T:
        """`fetch()` every `poll_interval_s` until `done`; TimeoutError with `still(last)` after `timeout_s`."""
        deadline = time.monotonic() + timeout_s if timeout_s is not None else None
        while True:
            current = fetch()
            if on_progress is not None:
                on_progress(current)
            if done(current):
                return current
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(still(current))
            self._sleep(poll_interval_s)

    # --- downloads -------------------------------------------------------------------------------------------------
    def download_checkpoint(
        self, job_id: str, dest: str | Path, *, step: int | None = None, model_only: bool = False
    ) -> Path:
        """A complete checkpoint (the newest, or `step`) into `dest`, each file's sha256 checked against the
        manifest; a file that does not match is deleted and ChecksumMismatch raised. Returns `dest`."""
        checkpoint = self._pick_checkpoint(job_id, step)
        dest = Path(dest)
        for file in checkpoint.files:
            if model_only and file.path.startswith(MODEL_ONLY_EXCLUDES):
                continue
            expected = checkpoint.manifest.get(file.path, file.sha256)
            self._download_file(file.url, path_inside(dest, file.path), expected)
        return dest

    def get_model(self, job_id: str) -> ModelOut:
        return ModelOut.model_validate(self._get(f"/v1/jobs/{job_id}/model"))

    def download_model(self, job_id: str, dest: str | Path) -> Path:
        """The repaired model (an HF folder that from_pretrained loads) into `dest`, each file's sha256 checked
        against the manifest; a file that does not match is deleted and ChecksumMismatch raised."""
        model = self.get_model(job_id)
        dest = Path(dest)
        for file in model.files:
            self._download_file(file.url, path_inside(dest, file.path), model.manifest.get(file.path, file.sha256))
        return dest

    def _pick_checkpoint(self, job_id: str, step: int | None) -> CheckpointOut:
        items = self.list_checkpoints(job_id).items
        if step is not None:
            items = [c for c in items if c.step == step]
        if not items:
            raise LinguDistillError(f"job {job_id} has no complete checkpoint" + (f" at step {step}" if step else ""))
        return max(items, key=lambda c: c.step)

    def _download_file(self, url: str, target: Path, sha256: str) -> None:
        own = not url.startswith(("http://", "https://")) or url.startswith(self.base_url + "/")
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                self._stream_to(url, own, target, sha256)
                return
            except (httpx.TransportError, _Busy) as exc:
                if attempt == self.retry.max_attempts:
                    raise ApiConnectionError(f"download {url}: {exc}") from exc
                self._sleep(self.retry.delay(attempt, exc.retry_after if isinstance(exc, _Busy) else None))

    def _stream_to(self, url: str, own: bool, target: Path, sha256: str) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        digest = hashlib.sha256()
        # a presigned URL carries its own authorisation: the API key is never sent to another host
        http = self._http if own else httpx.Client(timeout=self._http.timeout, transport=self._transport)
        try:
            with http.stream("GET", url) as response:
                if response.status_code in RETRY_STATUSES:
                    raise _Busy(parse_retry_after(response.headers.get("Retry-After")))
                if response.is_error:
                    raise ApiError.from_response(response)
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        finally:
            if not own:
                http.close()
        if digest.hexdigest() != sha256:
            partial.unlink(missing_ok=True)
            raise ChecksumMismatch(f"{target.name}: sha256 {digest.hexdigest()} != manifest {sha256}")
        partial.replace(target)

    # --- datasets --------------------------------------------------------------------------------------------------
    def upload_dataset(
        self, path: str | Path, *, name: str | None = None, format: str | None = None, kind: str = "training"
    ) -> DatasetOut:
        """Stream a JSONL or Parquet file to the server (never read whole into memory).

        kind: "training" for a mixture source, "evaluation" for an evaluation suite."""
        path = Path(path)
        fmt = format or ("parquet" if path.suffix == ".parquet" else "jsonl")
        media = "application/vnd.apache.parquet" if fmt == "parquet" else "application/x-ndjson"

        def body() -> Iterator[bytes]:
            with path.open("rb") as handle:
                yield from iter(lambda: handle.read(CHUNK), b"")

        params = {"name": name or path.name, "format": fmt, "kind": kind}
        headers = {"Content-Type": media, "Content-Length": str(path.stat().st_size)}
        response = self._request("POST", "/v1/datasets", params=params, content=body, headers=headers)
        return DatasetOut.model_validate(response.json())

    def list_datasets(self, *, limit: int = 50, after: str | None = None) -> DatasetPage:
        return DatasetPage.model_validate(self._get("/v1/datasets", _clean({"limit": limit, "after": after})))

    def iter_datasets(self) -> Iterator[DatasetOut]:
        after = None
        while True:
            page = self.list_datasets(limit=200, after=after)
            yield from page.items
            if not page.has_more:
                return
            after = page.next_cursor

    def get_dataset(self, dataset_id: str) -> DatasetOut:
        return DatasetOut.model_validate(self._get(f"/v1/datasets/{dataset_id}"))

    def find_dataset(self, sha256: str) -> DatasetOut | None:
        """The newest of this tenant's datasets with this content hash, if any."""
        return next((d for d in self.iter_datasets() if d.sha256 == sha256), None)

    # --- webhooks --------------------------------------------------------------------------------------------------
    def create_webhook(self, url: str, events: Iterable[str] | None = None, *, description: str = "") -> WebhookCreated:
        """Register an endpoint; the returned `secret` is shown only once."""
        body = WebhookCreate.model_validate(
            {"url": url, "description": description, **({"events": list(events)} if events is not None else {})}
        )
        response = self._request("POST", "/v1/webhooks", json=body.model_dump(mode="json"))
        return WebhookCreated.model_validate(response.json())

    def list_webhooks(self, *, limit: int = 50, after: str | None = None) -> WebhookPage:
        return WebhookPage.model_validate(self._get("/v1/webhooks", _clean({"limit": limit, "after": after})))

    def get_webhook(self, webhook_id: str) -> WebhookOut:
        return WebhookOut.model_validate(self._get(f"/v1/webhooks/{webhook_id}"))

    def delete_webhook(self, webhook_id: str) -> None:
        self._request("DELETE", f"/v1/webhooks/{webhook_id}")

    def list_deliveries(
        self, webhook_id: str, *, limit: int = 50, after: str | None = None, status: str | None = None
    ) -> DeliveryPage:
        params = _clean({"limit": limit, "after": after, "status": status})
        return DeliveryPage.model_validate(self._get(f"/v1/webhooks/{webhook_id}/deliveries", params))


@dataclass(frozen=True)
class SweepSubmission:
    sweep: SweepOut
    replayed: bool


@dataclass(frozen=True)
class Submission:
    job: JobOut
    replayed: bool  # an earlier request with the same Idempotency-Key created the job


def job_body(spec: JobSpec | dict[str, Any]) -> dict[str, Any]:
    """The JSON body POST /v1/jobs receives for `spec`."""
    return spec.model_dump(mode="json", exclude_none=True) if isinstance(spec, JobSpec) else spec


class _Busy(Exception):
    """A 429/503 on a streamed request, retried like a connection error."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__(f"server busy (retry after {retry_after})")
        self.retry_after = retry_after


def _first_still_in_flight(response: httpx.Response) -> bool:
    """409 `idempotency_in_flight`: an earlier request with this key (a dropped connection's, or a crashed CI
    step's) is still being processed; once it ends, the same request returns its job."""
    if response.status_code != 409:
        return False
    try:
        return response.json().get("code") == "idempotency_in_flight"
    except ValueError:
        return False


def _clean(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def path_inside(root: Path, relative: str) -> Path:
    """root/relative, refusing a manifest path that would escape `root`."""
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise LinguDistillError(f"refusing to write outside {root}: {relative!r}")
    return target


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
