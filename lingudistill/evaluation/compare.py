"""The lift of a finished method run over a finished control run (`lingudistill compare METHOD_DIR CONTROL_DIR`).

A run folder is what `lingudistill train` writes: report.json (whose provenance holds the spec) and
eval_items.json (the per-item scores of the teacher and of the student before and after). The combined report
is the method's report rebuilt with the control's scores after training (report.build_report's `control`), so its
verdict counts the min_lift gate.

A control is only a control when it differs from the method in the distillation alone: same student, teacher,
mixture (so the same data order, given the same seed), training settings (steps, seed, learning rates) and
evaluation suites, and `method.kd_sources: none`. Anything else is refused, naming the first differences,
because a lift between two runs that differ in more than KD measures those differences too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lingudistill.evaluation.lift import DEFAULT_RESAMPLES
from lingudistill.evaluation.report import ITEM_SCORES_FILE, Report, build_report, read_item_scores
from lingudistill.evaluation.scores import SuiteScore
from lingudistill.spec import JobSpec

# what a control must share with its method run (JobSpec fields, dotted below the top level)
# (training holds the seed and the steps: with the same mixture, the same seed gives the same data order)
SHARED_FIELDS = (
    "student",
    "teacher",
    "mixture",
    "training",
    "evaluation.language",
    "evaluation.vision",
    "evaluation.harness",
)


class CompareError(ValueError):
    """The two folders are not a finished method run and its control."""


@dataclass(frozen=True)
class FinishedRun:
    directory: Path
    spec: JobSpec
    report: dict[str, Any]
    scores: dict[str, dict[str, SuiteScore]]  # {teacher, before, after: {suite: SuiteScore}}


def load_run(directory: Path) -> FinishedRun:
    """A finished run's spec, report and per-item scores; CompareError naming what is missing."""
    directory = Path(directory)
    for name in ("report.json", ITEM_SCORES_FILE):
        if not (directory / name).is_file():
            raise CompareError(f"{directory} has no {name}: not the output folder of a finished `lingudistill train`")
    report = json.loads((directory / "report.json").read_text(encoding="utf-8"))
    spec = JobSpec.model_validate(report["provenance"]["spec"])
    return FinishedRun(directory, spec, report, read_item_scores(directory))


def control_differences(method: JobSpec, control: JobSpec) -> list[str]:
    """What keeps `control` from being the control of `method`; [] when it is one."""
    problems = []
    if control.method.kd_sources != "none":
        problems.append(f"the control trains with kd_sources {control.method.kd_sources}, not none")
    method_fields, control_fields = method.model_dump(mode="json"), control.model_dump(mode="json")
    for dotted in SHARED_FIELDS:
        if _field(method_fields, dotted) != _field(control_fields, dotted):
            problems.append(f"{dotted} differs")
    return problems


CONTROL_SUFFIX = "-control"


def control_spec(method: JobSpec) -> JobSpec:
    """The control arm of a resolved `method` spec: the same job without distillation (kd_sources none), so
    `control_differences(method, control_spec(method))` is empty. It keeps the seed, and so the data order; a spec
    without a seed has none to share, so the method's must be resolved first."""
    if method.training.seed is None:
        raise ValueError("the method spec is not resolved: its control must share its generated seed")
    name = method.name[: 100 - len(CONTROL_SUFFIX)] + CONTROL_SUFFIX
    return JobSpec.model_validate(
        method.model_dump(mode="json")
        | {
            "name": name,
            "method": method.method.model_dump(mode="json") | {"kd_sources": "none"},
            "evaluation": method.evaluation.model_dump(mode="json") | {"control": False},
        }
    )


def compare_runs(method_dir: Path, control_dir: Path, *, n_resamples: int = DEFAULT_RESAMPLES) -> Report:
    """The method's report with the control's `control` and `lift` sections; CompareError or lift.ItemMismatch
    when the runs cannot be compared."""
    method, control = load_run(method_dir), load_run(control_dir)
    problems = control_differences(method.spec, control.spec)
    if problems:
        raise CompareError(f"{control.directory} is not a control of {method.directory}: " + "; ".join(problems))
    provenance = {key: value for key, value in method.report["provenance"].items() if key not in ("spec", "seed")}
    return build_report(
        method.spec,
        teacher=method.scores["teacher"],
        before=method.scores["before"],
        after=method.scores["after"],
        control=control.scores["after"],
        metrics_path=method.directory / "metrics.jsonl",
        provenance={**provenance, "control_run": str(control.directory)},
        n_resamples=n_resamples,
    )


def _field(fields: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        fields = fields.get(part) if isinstance(fields, dict) else None  # type: ignore[assignment]
    return fields
