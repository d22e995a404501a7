"""A job's working folders on one host: SCRATCH/{job_id}/attempt-{n}/ (one per attempt) and finished/.

An attempt holds an flock on its folder's lock file for as long as its worker process lives. The lock outlives a
freeze (SIGSTOP, a VM pause): a frozen attempt's folder is live, its training child may still run in it, and a
later attempt on the same host must not delete it. The kernel drops the lock when the process dies, so a folder
whose lock can be taken is abandoned and may go.

finished/ holds a run that trained and evaluated but whose final upload failed: the next attempt on this host
uploads it instead of training again, if every file still has the sha256 recorded when it was kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from lingudistill.events import Done
from service.storage import file_sha256

LOCK_FILE = ".attempt.lock"
FINISHED = "finished"
FINISHED_RECORD = "finished.json"


class WorkdirLock:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def take(cls, workdir: Path) -> WorkdirLock:
        workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(workdir / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh attempt number: nobody else holds it
        return cls(fd)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)  # closing drops the flock


def remove_abandoned_attempts(job_dir: Path) -> list[Path]:
    """Delete the attempt folders of this job whose owner process is gone; returns them. Live ones stay."""
    removed = []
    for folder in sorted(job_dir.glob("attempt-*")):
        if _abandoned(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _abandoned(folder: Path) -> bool:
    try:
        fd = os.open(folder / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
    except OSError:
        return True  # not even a lock file can be made: a half-deleted folder
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its owner lives (perhaps frozen): never touch it
    finally:
        os.close(fd)
    return True


@dataclass(frozen=True)
class FinishedRun:
    folder: Path
    done: Done

    @classmethod
    def keep(cls, output: Path, job_dir: Path, done: Done) -> FinishedRun:
        """Move a finished attempt's output to job_dir/finished, with each file's sha256 and its Done event."""
        target = job_dir / FINISHED
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(output / "uploads", ignore_errors=True)  # staged checkpoints: not part of the result
        output.rename(target)
        files = {str(p.relative_to(target)): file_sha256(p) for p in sorted(target.rglob("*")) if p.is_file()}
        record = {"done": done.model_dump(mode="json"), "files": files}
        (target / FINISHED_RECORD).write_text(json.dumps(record))
        return cls(target, done)

    @classmethod
    def find(cls, job_dir: Path) -> FinishedRun | None:
        """The kept run, if every file is as it was kept; a damaged one is deleted (the job trains again)."""
        folder = job_dir / FINISHED
        try:
            record = json.loads((folder / FINISHED_RECORD).read_text())
            intact = all(file_sha256(folder / name) == sha for name, sha in record["files"].items())
        except (OSError, ValueError, KeyError):
            intact = False
        if not intact:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return cls(folder, Done.model_validate(record["done"]))

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
