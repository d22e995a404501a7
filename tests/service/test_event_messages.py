"""Each event says in one line what happened, with a level a log viewer filters on (issue 15)."""

from __future__ import annotations

import pytest

from service.jobs.events import describe


@pytest.mark.parametrize(
    ("type", "data", "level", "message"),
    [
        ("status", {"status": "queued", "held": True}, "info",
         "Queued (held: the tenant's limit of active jobs is reached)."),
        ("status", {"status": "queued", "retry": True, "resume_from_step": 50}, "info",
         "Queued for a retry, to resume from the checkpoint at step 50."),
        ("status", {"status": "cancelled", "by": "user"}, "warning", "Cancelled by the user."),
        ("status", {"status": "pausing", "by": "user"}, "info",
         "Pause requested: the job stops at its next step boundary, after saving a checkpoint there."),
        ("status", {"status": "paused", "step": 12, "checkpoint": "step-000000012"}, "info",
         "Paused at step 12 (checkpoint step-000000012); the GPU is free until the job is resumed."),
        ("status", {"status": "paused", "by": "user"}, "info",
         "Paused before it started; it is not dispatched until resumed."),
        ("status", {"status": "queued", "resumed": True, "resume_from_step": 12}, "info",
         "Resumed: queued to continue from the checkpoint at step 12."),
        ("checkpoint", {"step": 500, "size_bytes": 1_234_567_890}, "info", "Checkpoint saved at step 500 (1.2 GB)."),
        ("evaluation", {"step": 80, "scores": {"quiz": 0.7826}}, "info", "Evaluated at step 80: quiz 78.3%."),
        ("training", {"from_step": 40, "total_steps": 80}, "info", "Training resumed at step 40 of 80."),
        ("attempt_failed", {"reason": "infrastructure", "message": "lease lost"}, "warning",
         "This attempt failed (infrastructure): lease lost"),
        ("stalled", {"seconds": 600, "step": 12}, "error",
         "No progress for 600 s at step 12; the training process is stopped."),
        ("upload_retry", {"try": 2, "error": "OSError: reset"}, "warning",
         "Upload attempt 2 failed, retrying: OSError: reset"),
        ("notice", {"level": "warning", "message": "MLflow unreachable; metrics are kept"}, "warning",
         "MLflow unreachable; metrics are kept"),
        ("something_new", {"x": 1}, "info", "Something new"),
    ],
)  # fmt: skip
def test_events_read_as_sentences(type, data, level, message):
    assert describe(type, data) == (level, message)
