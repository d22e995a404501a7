"""A dataset deletion and a submission naming it cannot both win (committed Postgres, two real sessions)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from lingudistill.spec import JobSpec
from service.datasets import service as datasets
from service.dispatch import DispatchBuffer
from service.jobs import service as jobs
from service.keys.service import authenticate
from service.settings import Settings
from service.storage import LocalStorage
from tests.service.live import end_live_jobs_fixture  # noqa: F401 (the end_live_jobs fixture)


def test_a_deletion_waits_for_a_submission_naming_the_dataset_and_then_refuses(
    live_server, live_key, live_sessions, spec_body, tmp_path, end_live_jobs
):
    headers = {"Authorization": f"Bearer {live_key}", "Content-Type": "application/x-ndjson"}
    body = b'{"prompt": "a", "response": "b"}\n'
    dataset = httpx.post(f"{live_server}/v1/datasets", params={"name": "locked"}, content=body, headers=headers).json()
    spec = JobSpec.model_validate(spec_body("locked", mixture=[{"name": "d", "uri": dataset["uri"], "distill": True}]))
    outcome: list[object] = []
    with live_sessions() as session:
        tenant = authenticate(session, live_key)

    def delete() -> None:
        with live_sessions() as session:
            try:
                datasets.delete_dataset(session, LocalStorage(tmp_path), tenant, dataset["id"])
                session.commit()
                outcome.append("deleted")
            except datasets.DatasetInUse as exc:
                outcome.append(exc)

    with live_sessions() as submitting:
        job = jobs.create_job(submitting, tenant, spec, Settings(data_dir=tmp_path), DispatchBuffer())  # uncommitted
        end_live_jobs.append(job.id)
        deleting = threading.Thread(target=delete)
        deleting.start()
        time.sleep(0.5)  # the deletion reaches the dataset's row lock (without the lock it would delete now)
        assert outcome == []
        submitting.commit()
    deleting.join(timeout=10)
    (result,) = outcome
    assert isinstance(result, datasets.DatasetInUse), result
    # and so does any later deletion while the job is queued
    with pytest.raises(datasets.DatasetInUse), live_sessions() as session:
        datasets.delete_dataset(session, LocalStorage(tmp_path), tenant, dataset["id"])
