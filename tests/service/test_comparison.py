"""The lift of one stored job over its control arm: run files come down from storage, the report goes back up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lingudistill.evaluation.compare import CompareError
from lingudistill.evaluation.report import read_item_scores
from service.comparison import RunFilesMissing, compare_jobs, upload_combined_report
from service.storage import LocalStorage
from service.storage_layout import artifact_key
from tests.evaluation.test_compare import arm, finished_run, make_spec


def store_run(storage: LocalStorage, job_id: str, folder: Path) -> None:
    for path in folder.iterdir():
        storage.put_file(artifact_key(job_id, path.name), path)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


def test_compare_two_stored_jobs_and_upload_the_combined_report(storage: LocalStorage, tmp_path: Path) -> None:
    store_run(storage, "job_m", finished_run(tmp_path / "m", make_spec(min_lift=0.05), arm(22, 30)))
    store_run(storage, "job_c", finished_run(tmp_path / "c", make_spec("none"), arm(12, 29)))

    report = compare_jobs(storage, "job_m", "job_c", n_resamples=300)

    assert report["lift"]["mean_recovery"]["estimate"] == pytest.approx(10 / 28)
    assert report["provenance"]["control_run"] == "job_c"
    keys = upload_combined_report(storage, "job_m", report)
    assert artifact_key("job_m", "report.md") in keys
    stored = json.loads(storage.path(artifact_key("job_m", "report.json")).read_text())
    assert stored["lift"] == report["lift"] and "control" in stored
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    storage.path(artifact_key("job_m", "eval_items.json")).replace(fetched / "eval_items.json")
    assert "control" in read_item_scores(fetched)  # the control arm's per-item scores are kept beside the method's


def test_a_job_without_its_scores_cannot_be_compared_yet(storage: LocalStorage, tmp_path: Path) -> None:
    store_run(storage, "job_m", finished_run(tmp_path / "m", make_spec(), arm(22, 30)))
    with pytest.raises(RunFilesMissing, match=r"job_c has no report\.json"):
        compare_jobs(storage, "job_m", "job_c")


def test_a_stored_job_that_is_not_a_control_is_refused(storage: LocalStorage, tmp_path: Path) -> None:
    store_run(storage, "job_m", finished_run(tmp_path / "m", make_spec(), arm(22, 30)))
    store_run(storage, "job_x", finished_run(tmp_path / "x", make_spec(seed=8), arm(12, 29)))
    with pytest.raises(CompareError, match="kd_sources"):
        compare_jobs(storage, "job_m", "job_x")
