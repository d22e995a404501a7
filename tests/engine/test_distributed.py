"""Multi-GPU jobs on the CPU: torchrun with 2 gloo processes, the FSDP2-sharded student, DCP checkpoints.

The global batch is the same in both runs: one process with batch_size 4, or 2 ranks with batch_size 2 each
(every rank draws the global micro-batch and keeps its slice). So the per-step losses must agree, and a
checkpoint written by 2 ranks must resume in 1 process (and in 2) with the losses the uninterrupted run had.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForImageTextToText

from lingudistill.events import CheckpointSaved, Done, Pulse, Step, Supervision, decode
from lingudistill.launch import launch_command
from lingudistill.models.loading import load_student, parameter_count
from lingudistill.pipeline import run_job
from lingudistill.recipe import MetricsFile, Recipe
from lingudistill.spec import load_spec
from tests.engine.conftest import tiny_spec
from tests.engine.test_pipeline import _write_suites

STEPS, CHECKPOINT_AT = 4, 2
pytestmark = pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs the gloo backend")


def _write_spec(job: Path, name: str, batch_size: int, **sections: dict) -> Path:
    spec = {**tiny_spec(job, batch_size=batch_size, max_steps=STEPS, checkpoint_every=CHECKPOINT_AT), **sections}
    path = job / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _losses(output: Path) -> dict[int, tuple[float, float, float]]:
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: (r["loss"], r["loss_ce"], r["loss_kd"]) for r in records}


def _assert_close(actual: dict, expected: dict, steps: range) -> None:
    for step in steps:
        assert actual[step] == pytest.approx(expected[step], rel=1e-4, abs=1e-5), f"step {step}"


def _torchrun(spec: Path, output: Path, *, resume: bool, supervision: Path | None = None) -> None:
    command = launch_command(spec, output, 2, resume, supervision=supervision)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LINGUDISTILL_DEVICE": "cpu", "PYTHONFAULTHANDLER": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


def _single(spec: Path, output: Path, *, resume: bool = False) -> None:
    Recipe(load_spec(spec), output, callbacks=[MetricsFile(output / "metrics.jsonl")]).train(resume=resume)


def _resume_folder(checkpoint: Path, output: Path) -> Path:
    """A fresh output folder holding only `checkpoint`, as a job moved to another machine would have."""
    shutil.copytree(checkpoint, output / "checkpoints" / checkpoint.name)
    return output


def test_two_ranks_match_one_process_and_resume_on_one_or_two(tiny_job):
    job = tiny_job.parent
    single, dual = _write_spec(job, "single", 4), _write_spec(job, "dual", 2)
    command = launch_command(dual, job / "x", 2, True)
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m"]
    assert command[6:] == ["lingudistill.distributed", str(dual), "--output", str(job / "x"), "--resume"]

    _single(single, job / "one")
    _torchrun(dual, job / "two", resume=False)
    expected = _losses(job / "one")
    _assert_close(_losses(job / "two"), expected, range(1, STEPS + 1))

    # rank 0 alone wrote the outputs; the model is whole and loads as an HF folder
    checkpoint = job / "two" / "checkpoints" / f"step-{CHECKPOINT_AT:09d}"
    assert (checkpoint / "dcp" / ".metadata").is_file() and (checkpoint / "manifest.json").is_file()
    steps = [json.loads(line)["step"] for line in (job / "two" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))
    reloaded = AutoModelForImageTextToText.from_pretrained(job / "two" / "model")
    assert parameter_count(reloaded) == parameter_count(load_student(str(job / "student")).model)
    assert reloaded.config.architectures == ["LlavaForConditionalGeneration"]

    # 2 ranks -> checkpoint -> 1 process (batch 4) and 2 ranks: the remaining steps as in the uninterrupted run
    _single(single, _resume_folder(checkpoint, job / "resume-one"), resume=True)
    _assert_close(_losses(job / "resume-one"), expected, range(CHECKPOINT_AT + 1, STEPS + 1))
    _torchrun(dual, _resume_folder(checkpoint, job / "resume-two"), resume=True)
    _assert_close(_losses(job / "resume-two"), expected, range(CHECKPOINT_AT + 1, STEPS + 1))


def test_a_single_process_checkpoint_resumes_on_two_ranks(tiny_job):
    job = tiny_job.parent
    single, dual = _write_spec(job, "single", 4), _write_spec(job, "dual", 2)
    _single(single, job / "one")
    checkpoint = job / "one" / "checkpoints" / f"step-{CHECKPOINT_AT:09d}"
    assert not (checkpoint / "dcp").exists()  # single-process runs keep the plain format
    _torchrun(dual, _resume_folder(checkpoint, job / "resume-two"), resume=True)
    _assert_close(_losses(job / "resume-two"), _losses(job / "one"), range(CHECKPOINT_AT + 1, STEPS + 1))


def test_two_ranks_with_evaluation_suites_score_during_training_and_report(tiny_job):
    """The multi-GPU path is pipeline.run_job on every rank: periodic evaluation (in lockstep on the sharded student),
    the final report with the inputs' provenance, and the supervisor's events, as in one process."""
    job = tiny_job.parent
    _write_suites(job)
    suites = {"language": [{"name": "sums", "uri": "data/language.jsonl"}], "every": 2}
    suites["vision"] = [{"name": "colours", "uri": "data/vision.jsonl"}]
    single, dual = _write_spec(job, "single", 4, evaluation=suites), _write_spec(job, "dual", 2, evaluation=suites)
    output = job / "two"
    supervision = Supervision(str(output), orphan_after_s=600, uploads_dir=str(job / "uploads"))
    (job / "supervision.json").write_text(supervision.to_json())
    run_job(load_spec(single), job / "one")
    pulse = Pulse(supervision.pulse_file).start()  # the supervisor's: without it the ranks end as orphans
    try:
        _torchrun(dual, output, resume=False, supervision=job / "supervision.json")
    finally:
        pulse.stop()

    events = [decode(line) for line in supervision.events_file.read_text().splitlines()]
    assert [type(e).__name__ for e in events[:2]] == ["Validated", "TrainBegin"]
    assert isinstance(events[-1], Done) and not events[-1].stopped_early, events[-1]
    scored = {e.step: e.record for e in events if isinstance(e, Step) and "eval/sums" in e.record}
    assert sorted(scored) == [2], "every 2 steps, the last step being the final evaluation's"
    one = {r["step"]: r for r in map(json.loads, (job / "one" / "metrics.jsonl").read_text().splitlines())}
    for name in ("eval/sums", "eval/colours"):  # the sharded student scores what the single process's scores
        assert scored[2][name] == pytest.approx(one[2][name], abs=1e-6), name
    report = json.loads((output / "report.json").read_text())
    assert report == events[-1].report
    assert (
        report["provenance"]["teacher"]["uri"].endswith("/teacher")
        and report["provenance"]["datasets"]["text"]["sha256"]
    )
    assert {row["name"] for row in report["language"]["suites"]} == {"sums"}
    saved = [e for e in events if isinstance(e, CheckpointSaved)]
    assert [e.step for e in saved] == [CHECKPOINT_AT] and (Path(saved[0].folder) / "manifest.json").is_file()
