"""Evaluation and the recovery report (METHOD.md, "Recovery, the headline metric").

evaluate_suites(suites, kind, model, adapter, processor_or_tokenizer, batch_size=...) -> {name: SuiteScore}
build_report(spec, teacher=..., before=..., after=..., metrics_path=..., provenance=...) -> dict
write_report(report, output_dir, metrics_path) -> [report.json, report.md, *.svg]
evaluate_harness_tasks(tasks, model, tokenizer, batch_size=...) -> {task: SuiteScore}   (needs lm_eval: harness.py)
lift_section(method=, control=, teacher=, before=, language_names=, vision_names=) -> the report's lift section

The names below are imported on first use (PEP 562): scoring needs torch, and reading a suite
(`lingudistill.evaluation.suites`, which the API uses to validate an uploaded suite) must not import it (issue 15:
the first evaluation-dataset upload spent 50 s importing torch inside the request).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "HarnessUnavailable": "harness",
    "evaluate_harness_tasks": "harness",
    "ItemMismatch": "lift",
    "LiftEstimate": "lift",
    "lift_section": "lift",
    "Recovery": "recovery",
    "evaluate_gates": "recovery",
    "recovery": "recovery",
    "build_report": "report",
    "render_markdown": "report",
    "summary_lines": "report",
    "write_report": "report",
    "PRIMARY_METRIC": "scoring",
    "Scorer": "scoring",
    "SuiteScore": "scoring",
    "evaluate_suites": "scoring",
    "exact_match": "scoring",
    "normalize_answer": "scoring",
    "pick_choice": "scoring",
    "EvalItem": "suites",
    "load_suite": "suites",
}
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

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'lingudistill.evaluation' has no attribute {name!r}")
    module = importlib.import_module(f"lingudistill.evaluation.{module_name}")
    # Bind every name loaded with it. Importing a submodule sets it as an attribute of this package, and the
    # submodule `recovery` shares its name with the function `recovery`: the function must win, as it did when this
    # file imported everything eagerly.
    for exported, source in _EXPORTS.items():
        if source == module_name:
            globals()[exported] = getattr(module, exported)
    return globals()[name]
