"""What a tenant is shown of worker text: absolute paths on the worker are cut to their last part, URIs the tenant
wrote are kept (issue 15)."""

from __future__ import annotations

import pytest

from service.redact import redact_data, redact_paths


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("DataError: /tmp/ld-work/job_1/data/train.jsonl:3: bad", "DataError: .../train.jsonl:3: bad"),
        ('File "/usr/lib/python3.11/site-packages/x.py", line 3', 'File ".../x.py", line 3'),
        ("cannot read /home/worker/.cache/lingudistill/s3/ab12/img.png", "cannot read .../img.png"),
        ("s3://bucket/a/b.jsonl", "s3://bucket/a/b.jsonl"),
        ("file:///data/x/y.jsonl", "file:///data/x/y.jsonl"),
        ("https://host/p/q and hf://Org/Name@main", "https://host/p/q and hf://Org/Name@main"),
        ("a ratio of 1/2/3 and ./rel/path", "a ratio of 1/2/3 and ./rel/path"),
    ],
)
def test_worker_paths_are_cut_and_uris_kept(text, shown):
    assert redact_paths(text) == shown


def test_every_string_of_event_data_is_redacted():
    data = {"error": "OSError: /srv/w/a.bin", "nested": [{"traceback": "at /srv/w/x.py"}], "step": 3}
    assert redact_data(data) == {"error": "OSError: .../a.bin", "nested": [{"traceback": "at .../x.py"}], "step": 3}


def test_a_failed_job_webhook_carries_no_worker_path():
    from service.models import JobEvent, utcnow
    from service.webhooks.delivery import payload_of
    from service.webhooks.repository import EventRow

    data = {"status": "failed", "failure_message": "OSError: /srv/worker/tmp/job/model.bin: disk full"}
    event = JobEvent(id=7, job_id="job_1", attempt=1, type="status", data=data, created_at=utcnow())
    payload = payload_of(EventRow(event, "t", "repair", None), "job.failed")
    assert payload["data"]["failure_message"] == "OSError: .../model.bin: disk full"
