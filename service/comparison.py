"""The lift of one finished job over another, its control arm, from the files both jobs wrote to storage.

A job with `evaluation.control: true` is compared with its sibling control arm; a sweep compares its best arm with
the sweep's control arm. The arithmetic and the check that the control differs by the distillation alone are the
engine's (`lingudistill.evaluation.compare`, the same as `lingudistill compare METHOD_DIR CONTROL_DIR`): this module
only brings each job's run files down from storage into a folder the engine reads, and the combined report back up.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lingudistill.evaluation.compare import compare_runs
from lingudistill.evaluation.lift import DEFAULT_RESAMPLES
from lingudistill.evaluation.report import ITEM_SCORES_FILE, Report, write_report
from service.storage import Storage, copy_to_file
from service.storage_layout import artifact_key

REQUIRED_RUN_FILES = ("report.json", ITEM_SCORES_FILE)  # a finished run: its report and its per-item scores
OPTIONAL_RUN_FILES = ("metrics.jsonl",)  # the method's curves, plotted again in the combined report


class RunFilesMissing(LookupError):
    """A job has not (or not yet) uploaded what a comparison reads."""


def download_run(storage: Storage, job_id: str, target: Path) -> Path:
    """The job's report, per-item scores and metrics, copied into `target` (a run folder as `lingudistill train`
    writes it); RunFilesMissing names the first file the job has not uploaded."""
    target.mkdir(parents=True, exist_ok=True)
    for name in REQUIRED_RUN_FILES:
        if not storage.exists(artifact_key(job_id, name)):
            raise RunFilesMissing(f"job {job_id} has no {name} in storage: it has not finished its evaluation")
    for name in REQUIRED_RUN_FILES + OPTIONAL_RUN_FILES:
        key = artifact_key(job_id, name)
        if storage.exists(key):
            copy_to_file(storage, key, target / name)
    return target


def compare_jobs(
    storage: Storage, method_job_id: str, control_job_id: str, *, n_resamples: int = DEFAULT_RESAMPLES
) -> Report:
    """The method job's report rebuilt with the control job's scores: `control` and `lift` sections, and a verdict
    that counts `gates.min_lift`. Raises the engine's CompareError (the control is not a control of the method) or
    ItemMismatch (the arms were scored on different items), or RunFilesMissing."""
    with tempfile.TemporaryDirectory(prefix="lingudistill-compare-") as tmp:
        method_dir = download_run(storage, method_job_id, Path(tmp) / "method")
        control_dir = download_run(storage, control_job_id, Path(tmp) / "control")
        report = compare_runs(method_dir, control_dir, n_resamples=n_resamples)
    report["provenance"]["control_run"] = control_job_id  # the job id, not the temporary folder it was read from
    return report


def upload_combined_report(storage: Storage, job_id: str, report: Report) -> list[str]:
    """Write the combined report's files (report.json, report.md, plots, eval_items.json with the control arm)
    over the method job's artifacts; returns the keys written. The metrics stay the method job's own."""
    with tempfile.TemporaryDirectory(prefix="lingudistill-report-") as tmp:
        folder = Path(tmp)
        metrics = folder / "metrics.jsonl"
        if storage.exists(artifact_key(job_id, metrics.name)):
            copy_to_file(storage, artifact_key(job_id, metrics.name), metrics)
        out = folder / "out"
        written = write_report(report, out, metrics if metrics.exists() else None)
        keys = []
        for path in written:
            storage.put_file(artifact_key(job_id, path.name), path)
            keys.append(artifact_key(job_id, path.name))
        return keys
