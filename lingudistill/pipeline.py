"""A whole recovery job: validate, score before, train, score after, report.

`lingudistill train` and the worker both run this, so a job means the same thing in a terminal and in the
service. Output folder:
    metrics.jsonl, checkpoints/, model/, eval_before.json, report.json, report.md, plots
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lingudistill import evaluation, parallel
from lingudistill.data.sources import ValidationReport, read_source, source_sha256, validate_sources
from lingudistill.evaluation.harness import check_harness, evaluate_harness
from lingudistill.events import (
    CheckpointSaved,
    Evaluating,
    EventSink,
    Notice,
    Step,
    Supervision,
    TrainBegin,
    Validated,
    done_event,
    jsonable,
    watch_pulse,
)
from lingudistill.models.compat import check_compatibility
from lingudistill.models.encoding import Encoder
from lingudistill.models.loading import Student, Teacher, load_student, load_teacher
from lingudistill.recipe import MetricsFile, Recipe, TrainingCallback, TrainResult
from lingudistill.spec import JobSpec, MixtureSource
from lingudistill.trackers import Notify, TrackerCallback, check_trackers, job_trackers, log_notice

ENCODE_CHECK_RECORDS = 64  # per source: catches template/processor problems before training, cheaply


@dataclass
class Validation:
    student: Student
    teacher: Teacher
    data: ValidationReport


def validate(spec: JobSpec, *, decode_images: bool = True) -> Validation:
    """Harness tasks exist, models load and fit each other, and every record of every source parses; raises with
    the first problems."""
    if spec.evaluation.harness is not None:
        check_harness(spec.evaluation.harness)  # HarnessUnavailable here, not after training
    check_trackers(spec.integrations)
    student = load_student(spec.student)
    teacher = load_teacher(spec.teacher)
    check_compatibility(student, teacher, spec.method)
    report = validate_sources(spec.mixture, decode_images=decode_images)
    report.raise_if_failed()
    _check_encoding(spec, student)
    return Validation(student, teacher, report)


def _check_encoding(spec: JobSpec, student: Student) -> None:
    encoder = Encoder(student.adapter, student.processor, spec.training.max_seq_len)
    for source in spec.mixture:
        for index, record in enumerate(read_source(source)):
            if index >= ENCODE_CHECK_RECORDS:
                break
            encoder.encode(record, distill=spec.distills(source))


@dataclass
class JobResult:
    train: TrainResult
    report: dict[str, Any] | None


def resolve_seed(spec: JobSpec, output_dir: Path, *, resume: bool) -> JobSpec:
    """The spec with its seed: the one given, else the one recorded in DIR/spec.json when resuming (the data order
    and the checkpoint's RNG state belong to it), else a new one. On several ranks rank 0 decides for all."""
    if spec.training.seed is not None:
        return spec
    recorded = Path(output_dir) / "spec.json"
    if resume and recorded.is_file():
        seed = JobSpec.model_validate_json(recorded.read_text()).training.seed
        return spec.model_copy(update={"training": spec.training.model_copy(update={"seed": seed})}).resolved()
    resolved: JobSpec = parallel.broadcast_object(spec.resolved() if parallel.topology().is_main else None)
    return resolved


def run_job(
    spec: JobSpec,
    output_dir: Path,
    *,
    resume: bool = False,
    callbacks: Sequence[TrainingCallback] = (),
    progress: bool = False,
    validation: Validation | None = None,
    origin: JobSpec | None = None,
    notify: Notify = log_notice,
) -> JobResult:
    """The one orchestration of a job, in one process or on every rank of a torchrun group.

    `validation`: the result of `validate(spec)` when the caller ran it already (the worker's stage).
    `origin`: the spec as submitted, when `spec` names local copies of its data (the worker's dataset:// URIs);
    the report's provenance records the submitted URIs.
    `notify`: where the experiment trackers' notices go (run links, outages); a supervised run sends them as events.
    On several ranks every rank trains its shard; rank 0 alone scores, writes the outputs and calls `callbacks`."""
    rank = parallel.topology()
    with job_trackers(spec, Path(output_dir), notify, enabled=rank.is_main) as trackers:
        tracking = [TrackerCallback(trackers)] if trackers else []
        return _run(spec, Path(output_dir), resume, [*tracking, *callbacks], progress, validation, origin)


def _run(
    spec: JobSpec,
    output_dir: Path,
    resume: bool,
    callbacks: Sequence[TrainingCallback],
    progress: bool,
    validation: Validation | None,
    origin: JobSpec | None,
) -> JobResult:
    rank = parallel.topology()
    output_dir = Path(output_dir)
    spec = resolve_seed(spec, output_dir, resume=resume)
    checked = validation or validate(spec)
    provenance = _provenance(spec, checked, origin or spec) if rank.is_main else {}
    scores_before = _begin_output(spec, checked, output_dir, progress) if rank.is_main else {}
    progress = progress and rank.is_main
    recipe = Recipe(
        spec,
        output_dir,
        # PeriodicEvaluation first: it adds its scores to the step record that the others then write and send.
        callbacks=[PeriodicEvaluation(spec, progress), MetricsFile(output_dir / "metrics.jsonl"), *callbacks],
        progress=progress,
        student=checked.student,
        # sharded, each rank loads its own teacher (bf16, on its device): the validated one stays on the CPU
        teacher=checked.teacher if any(spec.distills(s) for s in spec.mixture) and not rank.enabled else None,
    )
    del checked, validation  # the trained student lives on in the recipe; the CPU teacher may go
    result = recipe.train(resume=resume)
    trained = None if rank.enabled else recipe.student
    del recipe  # sharded: this rank's shard goes before rank 0 reads the whole model back
    if rank.enabled:
        # Every rank's last collective (the gather of the final model) must be complete on both ends before a rank
        # leaves: gloo aborts the process when a rank tears its group down while a send to rank 0 is in flight.
        parallel.barrier()
    if result.stopped_early or not has_suites(spec) or not rank.is_main:
        return JobResult(result, None)
    # sharded, rank 0 evaluates the folder just written, whole: the final evaluation needs no other rank
    student = trained or load_student(str(result.model_dir))
    return JobResult(result, report_after(spec, student, scores_before, output_dir, progress, provenance))


def _begin_output(spec: JobSpec, checked: Validation, output_dir: Path, progress: bool) -> dict[str, Any]:
    """The output folder with the resolved spec, and the input models' scores (stored, so a resume reuses them)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "spec.json").write_text(spec.model_dump_json(indent=2))
    return score_before(spec, checked, output_dir, progress)


def run_supervised(
    spec: JobSpec, supervision: Supervision, sink: EventSink, *, resume: bool, origin: JobSpec | None = None
) -> None:
    """A job under the worker's supervisor (lingudistill.events), in one process or on every rank: validate, then
    run_job, telling the supervisor each stage through `sink` (rank 0's; a NoSink on the other ranks). The caller
    sends an error as `events.failed_event(exc)`: it may happen before this module is even imported."""
    watch_pulse(supervision)
    checked = validate(spec)  # the `validating` stage: models, tokenizer compatibility, every record of the data
    sink.send(Validated())
    stopping = supervision.stop_file.exists() or supervision.pause_file.exists()
    if parallel.broadcast_object(stopping):  # cancelled or paused while validating: nothing trained to checkpoint
        sink.send(done_event(0, True, None, None))
        return
    relay = EventRelay(sink, supervision, spec.training.max_steps)
    output_dir = Path(supervision.output_dir)
    result = run_job(
        spec, output_dir, resume=resume, callbacks=[relay], validation=checked, origin=origin, notify=relay.notice
    )
    sink.send(done_event(result.train.steps, result.train.stopped_early, result.train.model_dir, result.report))


class EventRelay(TrainingCallback):
    """The supervised run's callback: training progress as events, the STOP file as should_stop and the PAUSE file
    as should_pause."""

    def __init__(self, sink: EventSink, supervision: Supervision, total: int) -> None:
        self.sink, self.supervision, self.total = sink, supervision, total

    def on_train_begin(self, recipe: Recipe) -> None:
        self.sink.send(TrainBegin(step=recipe.step, total=self.total))

    def on_step(self, record: dict[str, Any]) -> None:
        self.sink.send(Step(record=record))

    def on_checkpoint(self, step: int, folder: Path, manifest: dict[str, Any]) -> None:
        # Hard links keep the files for the upload even after the engine prunes the folder; they cost no copy.
        staged = link_tree(folder, Path(self.supervision.uploads_dir) / folder.name)
        self.sink.send(CheckpointSaved(step=step, folder=str(staged)))

    def should_stop(self) -> bool:
        return self.supervision.stop_file.exists()

    def should_pause(self) -> bool:
        return self.supervision.pause_file.exists()

    def on_train_end(self, result: TrainResult) -> None:
        if not result.stopped_early:
            self.sink.send(Evaluating())

    def notice(self, level: str, message: str, data: dict[str, Any]) -> None:
        self.sink.send(Notice(level=level, message=message, data=jsonable(data)))  # type: ignore[arg-type]


def link_tree(source: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, destination)
        except OSError:  # another filesystem: copy instead
            shutil.copy2(path, destination)
    return target


class PeriodicEvaluation(TrainingCallback):
    """Every `evaluation.every` steps, scores the student on every suite into the step record as eval/<suite>.

    On several ranks every rank runs it in lockstep, since each forward of the sharded student is a collective;
    rank 0's record is the one written and sent."""

    every_rank = True

    def __init__(self, spec: JobSpec, progress: bool = False) -> None:
        self.spec, self.progress = spec, progress
        self.student: Student | None = None

    def on_train_begin(self, recipe: Recipe) -> None:
        # with the recipe's adapter: sharded, it gathers lm_head's weight where evaluation computes logits
        self.student = replace(recipe.student, adapter=recipe.adapter)

    def on_step(self, record: dict[str, Any]) -> None:
        every = self.spec.evaluation.every
        if (
            not every
            or self.student is None
            or record["step"] % every
            or record["step"] >= self.spec.training.max_steps
        ):
            return  # the last step is scored by the final evaluation
        scores = _evaluate(self.spec, "during", self.student, None, self.progress)["during"]
        record.update({f"eval/{name}": score.score for name, score in scores.items() if score.score is not None})


def report_after(
    spec: JobSpec,
    student: Student,
    scores_before: dict[str, Any],
    output_dir: Path,
    progress: bool,
    provenance: dict[str, Any],
) -> dict[str, Any] | None:
    """Score the trained student and write the recovery report; None when the spec has no suites."""
    if not has_suites(spec):
        return None
    after = _evaluate(spec, "after", student, None, progress)
    report = evaluation.build_report(
        spec,
        teacher=scores_before["teacher"],
        before=scores_before["before"],
        after=after["after"],
        metrics_path=output_dir / "metrics.jsonl",
        provenance=provenance,
    )
    evaluation.write_report(report, output_dir, output_dir / "metrics.jsonl")
    return report


def has_suites(spec: JobSpec) -> bool:
    return bool(spec.evaluation.language_suite_names() or spec.evaluation.vision)


def score_before(spec: JobSpec, checked: Validation, output_dir: Path, progress: bool) -> dict[str, Any]:
    """Teacher and untrained-student scores; stored so a resumed job does not score the trained student."""
    path = output_dir / "eval_before.json"
    if path.exists():
        stored = json.loads(path.read_text())
        return {k: {n: evaluation.SuiteScore.from_dict(s) for n, s in v.items()} for k, v in stored.items()}
    if not has_suites(spec):
        return {"teacher": {}, "before": {}}
    scores = _evaluate(spec, "before", checked.student, checked.teacher, progress)
    path.write_text(json.dumps({k: {n: s.to_dict() for n, s in v.items()} for k, v in scores.items()}, indent=1))
    return scores


def _evaluate(
    spec: JobSpec, when: str, student: Student, teacher: Teacher | None, progress: bool
) -> dict[str, dict[str, evaluation.SuiteScore]]:
    """Language suites and harness tasks on the student (and the teacher, the reference); vision suites on the
    student only."""
    options = {"batch_size": spec.evaluation.batch_size, "progress": progress}
    harness, batch_size = spec.evaluation.harness, spec.evaluation.batch_size
    model, adapter, processor = student.model, student.adapter, student.processor
    was_training = model.training
    model.eval()
    scores = {
        when: {
            **evaluation.evaluate_suites(spec.evaluation.language, "language", model, adapter, processor, **options),
            **evaluate_harness(harness, model, getattr(processor, "tokenizer", processor), batch_size=batch_size),
            **evaluation.evaluate_suites(spec.evaluation.vision, "vision", model, adapter, processor, **options),
        }
    }
    if teacher is not None:
        scores["teacher"] = {
            **evaluation.evaluate_suites(
                spec.evaluation.language, "language", teacher.model, None, teacher.tokenizer, **options
            ),
            **evaluate_harness(harness, teacher.model, teacher.tokenizer, batch_size=batch_size),
        }
    model.train(was_training)
    return scores


def _provenance(spec: JobSpec, checked: Validation, origin: JobSpec) -> dict[str, Any]:
    submitted = {source.name: source.uri for source in origin.mixture}
    return {
        "spec": origin.model_dump(mode="json"),
        "seed": spec.seed,
        "student": {"uri": spec.student, **vars(checked.student.source)},
        "teacher": {"uri": spec.teacher, **vars(checked.teacher.source)},
        "datasets": {s.name: _dataset_provenance(s, checked, submitted.get(s.name, s.uri)) for s in spec.mixture},
    }


def _dataset_provenance(source: MixtureSource, checked: Validation, submitted_uri: str) -> dict[str, Any]:
    """The URI as submitted; the record count and sha256 of the data actually read."""
    return {"uri": submitted_uri, "records": checked.data.counts.get(source.name), "sha256": source_sha256(source)}
