"""The headline arithmetic of METHOD.md ("Recovery, the headline metric"), and the quality gates.

    recovery   = (after - before) / (teacher - before)   per language suite, on its primary metric
    retention  = after - before                          per vision suite
    vision drop = vision average before - vision average after

Recovery is "not applicable" (value None, with the reason) when the teacher does not beat the student before
training (nothing was lost, so nothing can be recovered), when a score is missing, or when the suite has no
items: it never divides by zero. The mean recovery averages the applicable suites only.

A gate whose value cannot be computed (no applicable language suite, no scored vision suite) fails, with a note:
a CI verdict must never pass on a check that did not run. The one exception is min_lift in a report without a
control arm: there is no lift to check, so the gate is listed as not applicable (`applicable: false`, passed,
with a note) rather than failing every run that has no control; the report that has the control (the service's
sibling arm, or `lingudistill compare`) is the one whose verdict counts it. With a control but without an
interval (no per-item scores), min_lift fails like any gate that could not be computed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lingudistill.evaluation.scores import SuiteScore
from lingudistill.spec import GatesSpec

# scores are fractions in [0, 1]; a gate is compared with this slack so that 0.1 + 0.2 style rounding never flips it
_GATE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Recovery:
    value: float | None
    reason: str | None = None  # set when value is None

    @property
    def applicable(self) -> bool:
        return self.value is not None


def recovery(teacher: float | None, before: float | None, after: float | None) -> Recovery:
    """(after - before) / (teacher - before), or not applicable with the reason."""
    if teacher is None or before is None or after is None:
        missing = [name for name, v in (("teacher", teacher), ("before", before), ("after", after)) if v is None]
        return Recovery(None, f"no {' / '.join(missing)} score")
    if teacher <= before:
        return Recovery(
            None,
            f"the teacher ({teacher:.4g}) does not beat the student before training ({before:.4g}): nothing to recover",
        )
    return Recovery((after - before) / (teacher - before))


def mean(values: Iterable[float | None]) -> float | None:
    """The mean of the values that exist; None when there are none."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _score(scores: Mapping[str, SuiteScore], name: str) -> float | None:
    score = scores.get(name)
    return score.score if score is not None and score.n_items > 0 else None


def language_rows(
    names: Iterable[str],
    teacher: Mapping[str, SuiteScore],
    before: Mapping[str, SuiteScore],
    after: Mapping[str, SuiteScore],
) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        t, b, a = _score(teacher, name), _score(before, name), _score(after, name)
        result = recovery(t, b, a)
        reference = after.get(name) or before.get(name) or teacher.get(name)
        if reference is not None and reference.n_items == 0:
            result = Recovery(None, "the suite has no items")
        rows.append(
            {
                **_describe(reference, name),
                "teacher": t,
                "before": b,
                "after": a,
                "delta": a - b if a is not None and b is not None else None,
                "recovery": result.value,
                "recovery_note": result.reason,
            }
        )
    return rows


def vision_rows(
    names: Iterable[str], before: Mapping[str, SuiteScore], after: Mapping[str, SuiteScore]
) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        b, a = _score(before, name), _score(after, name)
        reference = after.get(name) or before.get(name)
        retention = a - b if a is not None and b is not None else None
        rows.append({**_describe(reference, name), "before": b, "after": a, "retention": retention})
    return rows


def _describe(score: SuiteScore | None, name: str) -> dict[str, Any]:
    if score is None:
        return {"name": name, "metric": None, "n_items": 0}
    return {"name": name, "metric": score.metric, "n_items": score.n_items}


def evaluate_gates(
    gates: GatesSpec,
    *,
    mean_recovery: float | None,
    vision_drop: float | None,
    lift: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One entry per configured gate: {name, threshold, value, passed, note}; min_lift adds `applicable`.

    `lift` is the report's lift section (lift.lift_section), None when the report has no control arm."""
    results = []
    if gates.min_recovery is not None:
        passed = mean_recovery is not None and mean_recovery >= gates.min_recovery - _GATE_TOLERANCE
        note = "mean language recovery" if mean_recovery is not None else "no language suite had anything to recover"
        results.append(_gate("min_recovery", gates.min_recovery, mean_recovery, passed, note))
    if gates.max_vision_drop is not None:
        passed = vision_drop is not None and vision_drop <= gates.max_vision_drop + _GATE_TOLERANCE
        note = "vision average before - after" if vision_drop is not None else "no vision suite was scored"
        results.append(_gate("max_vision_drop", gates.max_vision_drop, vision_drop, passed, note))
    if gates.min_lift is not None:
        results.append(min_lift_gate(gates.min_lift, lift))
    return results


def min_lift_gate(threshold: float, lift: dict[str, Any] | None) -> dict[str, Any]:
    """Passes when the lower bound of the 95% interval of the mean-recovery lift is at least `threshold`."""
    if lift is None:
        note = "not applicable: this report has no control arm (lingudistill compare METHOD_DIR CONTROL_DIR)"
        return {**_gate("min_lift", threshold, None, True, note), "applicable": False}
    mean_recovery = lift["mean_recovery"]
    low = mean_recovery["low"]
    passed = low is not None and low >= threshold - _GATE_TOLERANCE
    note = "lower bound of the 95% interval of the mean-recovery lift over the control"
    if low is None:
        note = f"no interval for the mean-recovery lift: {mean_recovery['note']}"
    return {**_gate("min_lift", threshold, low, passed, note), "applicable": True}


def _gate(name: str, threshold: float, value: float | None, passed: bool, note: str) -> dict[str, Any]:
    return {"name": name, "threshold": threshold, "value": value, "passed": passed, "note": note}
