"""A whole recovery job: validate, score before, train, score after, report.

`lingudistill train` and the worker both run this, so a job means the same thing in a terminal and in the
service. Output folder:
    metrics.jsonl, checkpoints/, model/, eval_before.json, report.json, report.md, plots
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lingudistill import evaluation
from lingudistill.data.sources import ValidationReport, read_source, source_sha256, validate_sources
from lingudistill.evaluation.harness import check_harness, evaluate_harness
from lingudistill.models.compat import check_compatibility
from lingudistill.models.encoding import Encoder
from lingudistill.models.loading import Student, Teacher, load_student, load_teacher
from lingudistill.recipe import MetricsFile, Recipe, TrainingCallback, TrainResult
from lingudistill.spec import JobSpec, MixtureSource

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


def run_job(
    spec: JobSpec,
    output_dir: Path,
    *,
    resume: bool = False,
    callbacks: Sequence[TrainingCallback] = (),
    progress: bool = False,
    validation: Validation | None = None,
    origin: JobSpec | None = None,
) -> JobResult:
    """`validation`: the result of `validate(spec)` when the caller ran it already (the worker's stage).
    `origin`: the spec as submitted, when `spec` names local copies of its data (the worker's dataset:// URIs);
    the report's provenance records the submitted URIs."""
    spec = spec.resolved() if spec.training.seed is None else spec
    output_dir = Path(output_dir)
    checked = validation or validate(spec)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "spec.json").write_text(spec.model_dump_json(indent=2))
    scores_before = score_before(spec, checked, output_dir, progress)
    recipe = Recipe(
        spec,
        output_dir,
        # PeriodicEvaluation first: it adds its scores to the step record that the others then write and send.
        callbacks=[PeriodicEvaluation(spec, progress), MetricsFile(output_dir / "metrics.jsonl"), *callbacks],
        progress=progress,
        student=checked.student,
        teacher=checked.teacher if any(spec.distills(s) for s in spec.mixture) else None,
    )
    result = recipe.train(resume=resume)
    if result.stopped_early:
        return JobResult(result, None)
    report = report_after(spec, recipe.student, checked, scores_before, output_dir, progress, origin)
    return JobResult(result, report)


class PeriodicEvaluation(TrainingCallback):
    """Every `evaluation.every` steps, scores the student on every suite into the step record as eval/<suite>."""

    def __init__(self, spec: JobSpec, progress: bool = False) -> None:
        self.spec, self.progress = spec, progress
        self.student: Student | None = None

    def on_train_begin(self, recipe: Recipe) -> None:
        self.student = recipe.student

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
    checked: Validation,
    scores_before: dict[str, Any],
    output_dir: Path,
    progress: bool = False,
    origin: JobSpec | None = None,
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
        provenance=_provenance(spec, checked, origin or spec),
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
