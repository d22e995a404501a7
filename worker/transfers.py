"""Moving files between a job's local output folder and storage: checkpoints (both ways), the model, the report.

Where each goes is service.storage_layout's; this module only moves and verifies the files.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lingudistill.checkpoint import MANIFEST
from service.storage import Storage, copy_to_file, file_sha256
from service.storage_layout import artifact_key, checkpoint_prefix, model_prefix

log = logging.getLogger(__name__)
REPORT_FILES = ("report.json", "report.md", "metrics.jsonl", "eval_before.json", "eval_items.json", "spec.json")
PLOT_SUFFIXES = (".png", ".svg", ".html")


class TransferError(RuntimeError):
    pass


@dataclass(frozen=True)
class UploadedCheckpoint:
    step: int
    prefix: str
    manifest: dict[str, str]  # relative path -> sha256, manifest.json included
    size_bytes: int


def upload_checkpoint(storage: Storage, job_id: str, step: int, folder: Path, attempt: int) -> UploadedCheckpoint:
    """Every file the manifest lists (sha256 checked as it streams), then the manifest itself, last."""
    listed: dict[str, str] = json.loads((folder / MANIFEST).read_text())["files"]
    prefix = checkpoint_prefix(job_id, step, attempt)
    manifest, size = {}, 0
    for name, sha in sorted(listed.items()):
        stored = storage.put_file(f"{prefix}/{name}", folder / name)
        if stored.sha256 != sha:
            raise TransferError(f"checkpoint {step}: {name} changed while uploading")
        manifest[name], size = sha, size + stored.size
    stored = storage.put_file(f"{prefix}/{MANIFEST}", folder / MANIFEST)
    manifest[MANIFEST] = stored.sha256
    return UploadedCheckpoint(step, prefix, manifest, size + stored.size)


def download_checkpoint(storage: Storage, prefix: str, manifest: dict[str, str], target: Path) -> None:
    """Fetch a complete checkpoint into `target`, verifying every file's sha256; raises TransferError."""
    shutil.rmtree(target, ignore_errors=True)
    for name, sha in sorted(manifest.items()):
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        copy_to_file(storage, f"{prefix}/{name}", path)
        if file_sha256(path) != sha:
            raise TransferError(f"{prefix}/{name}: sha256 mismatch")
    listed = json.loads((target / MANIFEST).read_text())["files"]
    if any(manifest.get(name) != sha for name, sha in listed.items()):
        raise TransferError(f"{prefix}: manifest.json disagrees with the recorded manifest")


def upload_folder(storage: Storage, folder: Path, prefix: str) -> int:
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    for path in files:
        storage.put_file(f"{prefix}/{path.relative_to(folder).as_posix()}", path)
    return len(files)


def upload_model(storage: Storage, job_id: str, folder: Path) -> int:
    """The repaired student's HF folder, then its manifest (sha256 per file): no manifest, no model."""
    prefix = model_prefix(job_id)
    manifest = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        manifest[relative] = storage.put_file(f"{prefix}/{relative}", path).sha256
    storage.put_stream(f"{prefix}/{MANIFEST}", [json.dumps({"files": manifest}, indent=1).encode()])
    return len(manifest)


def upload_results(storage: Storage, job_id: str, output_dir: Path) -> dict[str, int]:
    """The final model folder, then the report and its plots; returns file counts."""
    model = upload_model(storage, job_id, output_dir / "model")
    artifacts = 0
    for path in sorted(output_dir.iterdir()):
        if path.is_file() and (path.name in REPORT_FILES or path.suffix in PLOT_SUFFIXES):
            storage.put_file(artifact_key(job_id, path.name), path)
            artifacts += 1
    return {"model_files": model, "artifact_files": artifacts}


class CheckpointUploader:
    """Uploads checkpoints in a background thread, in order, so training never waits for storage.

    `on_uploaded` records the checkpoint as complete (in the database); a failed upload is reported through
    `on_failed` and skipped: resume then uses the previous complete checkpoint.
    """

    def __init__(
        self,
        storage: Storage,
        job_id: str,
        on_uploaded: Callable[[UploadedCheckpoint], None],
        on_failed: Callable[[int, BaseException], None],
        attempt: int,
    ) -> None:
        self.storage, self.job_id, self.attempt = storage, job_id, attempt
        self.on_uploaded, self.on_failed = on_uploaded, on_failed
        self.queue: queue.Queue[tuple[int, Path] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name=f"upload-{job_id}", daemon=True)
        self.thread.start()

    def submit(self, step: int, folder: Path) -> None:
        self.queue.put((step, folder))

    def close(self, wait: bool, timeout: float = 600.0) -> None:
        """Stop after the queued uploads (wait) or at once, dropping them."""
        if not wait:
            self._drop_pending()
        self.queue.put(None)
        self.thread.join(timeout if wait else 5.0)

    def _drop_pending(self) -> None:
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            step, folder = item
            try:
                self.on_uploaded(upload_checkpoint(self.storage, self.job_id, step, folder, self.attempt))
            except Exception as exc:
                log.exception("job %s: checkpoint %d upload failed", self.job_id, step)
                self.on_failed(step, exc)
            finally:
                shutil.rmtree(folder, ignore_errors=True)


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def upload_results_retrying(
    storage: Storage, job_id: str, output_dir: Path, limit_s: float, on_retry: Callable[[int, Exception], None]
) -> dict[str, int]:
    """upload_results, tried again (backoff 1 s doubling to 30 s) until it succeeds or `limit_s` has passed.

    A finished, evaluated run is worth minutes of waiting for storage: giving up means training again. Every try
    uploads everything again (the keys are the same, so a partial earlier try is simply overwritten)."""
    deadline, delay, tries = time.monotonic() + limit_s, 1.0, 0
    while True:
        tries += 1
        try:
            return upload_results(storage, job_id, output_dir)
        except Exception as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("job %s: final upload failed (try %d): %s", job_id, tries, exc)
            on_retry(tries, exc)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
