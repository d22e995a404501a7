"""Where a job's files live in storage: the one definition, read by the worker (which writes them) and the API
(which lists and serves them). Keys are relative to the storage root (STORAGE_URL).

    jobs/{job_id}/checkpoints/step-{step:09d}/attempt-{n}/...   a checkpoint; its manifest.json is uploaded last
    jobs/{job_id}/model/...                                     the repaired student, an HF folder; manifest.json last
    jobs/{job_id}/artifacts/{name}                              report.json, report.md, plots, metrics.jsonl
"""

from __future__ import annotations

MANIFEST = "manifest.json"  # written last in a checkpoint or model folder: no manifest, not complete


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}"


def checkpoint_prefix(job_id: str, step: int, attempt: int) -> str:
    """One folder per attempt: a stale attempt (fenced out, but still finishing an upload it had begun) writes
    only its own folder and can never overwrite the files of the current attempt's checkpoint at the same step."""
    return f"{job_prefix(job_id)}/checkpoints/step-{step:09d}/attempt-{attempt}"


def model_prefix(job_id: str) -> str:
    return f"{job_prefix(job_id)}/model"


def model_manifest_key(job_id: str) -> str:
    return f"{model_prefix(job_id)}/{MANIFEST}"


def artifacts_prefix(job_id: str) -> str:
    """With a trailing slash: artifact keys are this prefix plus a plain file name."""
    return f"{job_prefix(job_id)}/artifacts/"


def artifact_key(job_id: str, name: str) -> str:
    return artifacts_prefix(job_id) + name
