"""Evaluation and the recovery report (METHOD.md, "Recovery, the headline metric").

evaluate_suites(suites, kind, model, adapter, processor_or_tokenizer, batch_size=...) -> {name: SuiteScore}
build_report(spec, teacher=..., before=..., after=..., metrics_path=..., provenance=...) -> dict
write_report(report, output_dir, metrics_path) -> [report.json, report.md, *.svg]
evaluate_harness_tasks(tasks, model, tokenizer, batch_size=...) -> {task: SuiteScore}   (needs lm_eval: harness.py)
lift_section(method=, control=, teacher=, before=, language_names=, vision_names=) -> the report's lift section
"""

from lingudistill.evaluation.harness import HarnessUnavailable, evaluate_harness_tasks
from lingudistill.evaluation.lift import ItemMismatch, LiftEstimate, lift_section
from lingudistill.evaluation.recovery import Recovery, evaluate_gates, recovery
from lingudistill.evaluation.report import build_report, render_markdown, summary_lines, write_report
from lingudistill.evaluation.scoring import (
    PRIMARY_METRIC,
    Scorer,
    SuiteScore,
    evaluate_suites,
    exact_match,
    normalize_answer,
    pick_choice,
)
from lingudistill.evaluation.suites import EvalItem, load_suite

__all__ = [
    "PRIMARY_METRIC",
    "EvalItem",
    "HarnessUnavailable",
    "ItemMismatch",
    "LiftEstimate",
    "Recovery",
    "Scorer",
    "SuiteScore",
    "build_report",
    "evaluate_gates",
    "evaluate_harness_tasks",
    "evaluate_suites",
    "exact_match",
    "lift_section",
    "load_suite",
    "normalize_answer",
    "pick_choice",
    "recovery",
    "render_markdown",
    "summary_lines",
    "write_report",
]
