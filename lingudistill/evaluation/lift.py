"""The lift of a method run over its control arm, with a 95% paired bootstrap interval (METHOD.md, "The baseline").

The control is the same job with `kd_sources: none`: same student, teacher, data order, steps, seed and suites.
Both arms are scored on the same items, so the comparison pairs them item by item:

    suite lift           L_s = mean_i (m_si - c_si)                    items i of suite s, on its primary metric
    mean-recovery lift   L_R = mean_{s in A} L_s / (t_s - b_s)
                             = mean recovery of the method - mean recovery of the control

m_si and c_si are the method's and the control's score on item i (1 or 0), t_s and b_s the teacher's and the
untrained student's scores on suite s, and A the language suites with something to recover (t_s > b_s).

Paired bootstrap: draw n_s item indices of suite s with replacement, the same indices for both arms, and
recompute L_s; each suite is drawn on its own (stratified), and resample r of L_R uses every suite's r-th draw.
Repeat B times (n_resamples); the 95% interval is the 2.5th and 97.5th percentiles of the B values. The draws
come from one numpy Generator seeded with `seed`, suite by suite in report order, so a report is reproducible.

The teacher and before scores are held fixed, not resampled: they come from the same two models in both arms,
so they only set the scale of each suite's recovery, and a fixed scale keeps L_R defined in every resample
(a resampled t_s - b_s could reach 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lingudistill.evaluation.scores import SuiteScore

DEFAULT_RESAMPLES = 2000
CONFIDENCE = 0.95
_DRAWS_PER_CHUNK = 1_000_000  # item indices drawn at a time: bounds memory on suites of many thousand items


class ItemMismatch(ValueError):
    """The two arms were not scored on the same items, so they cannot be paired."""


@dataclass(frozen=True)
class LiftEstimate:
    """Method minus control, with its bootstrap interval (None where it cannot be computed, with the reason)."""

    estimate: float | None
    low: float | None
    high: float | None
    n_items: int
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "n_items": self.n_items,
            "note": self.note,
        }


def paired_differences(suite: str, method: Mapping[str, float], control: Mapping[str, float]) -> np.ndarray:
    """m_i - c_i per item, paired by item key, in the method's order; ItemMismatch naming the first unpaired key."""
    missing = next((key for key in method if key not in control), None)
    extra = next((key for key in control if key not in method), None)
    if missing is not None or extra is not None:
        where = f"item {missing!r} was scored by the method only" if missing is not None else ""
        where = where or f"item {extra!r} was scored by the control only"
        raise ItemMismatch(
            f"suite {suite}: the arms were not scored on the same items ({len(method)} vs {len(control)} items; "
            f"{where}); a control must use the same evaluation suites"
        )
    return np.array([method[key] - control[key] for key in method], dtype=np.float64)


def bootstrap_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The means of `n_resamples` resamples of `values` (n draws with replacement each): shape [n_resamples]."""
    n = len(values)
    rows_per_chunk = max(1, _DRAWS_PER_CHUNK // max(n, 1))
    means = []
    for start in range(0, n_resamples, rows_per_chunk):
        rows = min(rows_per_chunk, n_resamples - start)
        means.append(values[rng.integers(0, n, size=(rows, n))].mean(axis=1))
    return np.concatenate(means)


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central `confidence` interval of the bootstrap samples: their (1-c)/2 and (1+c)/2 quantiles."""
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


def lift_section(
    *,
    method: Mapping[str, SuiteScore],
    control: Mapping[str, SuiteScore],
    teacher: Mapping[str, SuiteScore],
    before: Mapping[str, SuiteScore],
    language_names: Sequence[str],
    vision_names: Sequence[str],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """The report's `lift` section from the two arms' scores after training and the shared teacher/before scores.

        {method, confidence, n_resamples, seed,
         suites: [{name, kind, metric, method, control, estimate, low, high, n_items, note}],
         mean_recovery: {method, control, estimate, low, high, n_items, suites, note}}

    Raises ItemMismatch when a suite's two arms were scored on different items.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, not {n_resamples}")
    rng = np.random.default_rng(seed)
    rows, draws = [], {}
    for kind, names in (("language", language_names), ("vision", vision_names)):
        for name in names:
            lift, draws[name] = _suite_lift(name, method.get(name), control.get(name), n_resamples, rng)
            rows.append({"name": name, "kind": kind, **_arm_scores(method.get(name), control.get(name)), **lift})
    return {
        "method": "paired bootstrap over evaluation items, stratified by suite",
        "confidence": CONFIDENCE,
        "n_resamples": n_resamples,
        "seed": seed,
        "suites": rows,
        "mean_recovery": _mean_recovery_lift(language_names, method, control, teacher, before, draws),
    }


def _arm_scores(method: SuiteScore | None, control: SuiteScore | None) -> dict[str, Any]:
    return {
        "metric": (method or control).metric if (method or control) else None,
        "method": method.score if method else None,
        "control": control.score if control else None,
    }


def _suite_lift(
    name: str, method: SuiteScore | None, control: SuiteScore | None, n_resamples: int, rng: np.random.Generator
) -> tuple[dict[str, Any], np.ndarray | None]:
    """The suite's LiftEstimate as a dict, and its bootstrap samples (None without per-item scores)."""
    if method is None or control is None or method.score is None or control.score is None:
        return LiftEstimate(None, None, None, 0, "not scored in both arms").to_dict(), None
    if method.items is None or control.items is None:
        note = "no per-item scores, so no interval"
        return LiftEstimate(method.score - control.score, None, None, method.n_items, note).to_dict(), None
    differences = paired_differences(name, method.items, control.items)
    samples = bootstrap_means(differences, n_resamples, rng)
    low, high = percentile_interval(samples)
    return LiftEstimate(float(differences.mean()), low, high, len(differences)).to_dict(), samples


def _mean_recovery_lift(
    language_names: Sequence[str],
    method: Mapping[str, SuiteScore],
    control: Mapping[str, SuiteScore],
    teacher: Mapping[str, SuiteScore],
    before: Mapping[str, SuiteScore],
    draws: Mapping[str, np.ndarray | None],
) -> dict[str, Any]:
    gaps = _recovery_gaps(language_names, teacher, before)
    scored = {name: gap for name, gap in gaps.items() if _scored(method.get(name)) and _scored(control.get(name))}
    if not scored:
        none = LiftEstimate(None, None, None, 0, "no language suite had anything to recover in both arms")
        return {"method": None, "control": None, **none.to_dict(), "suites": 0}
    arms = {
        arm: float(np.mean([(scores[name].score - before[name].score) / gap for name, gap in scored.items()]))
        for arm, scores in (("method", method), ("control", control))
    }
    n_items = sum(method[name].n_items for name in scored)
    unpaired = [name for name in scored if draws.get(name) is None]
    if unpaired:
        note = f"no per-item scores for {', '.join(unpaired)}, so no interval"
        lift = LiftEstimate(arms["method"] - arms["control"], None, None, n_items, note)
    else:
        samples = np.mean([draws[name] / gap for name, gap in scored.items()], axis=0)
        lift = LiftEstimate(arms["method"] - arms["control"], *percentile_interval(samples), n_items)
    return {**arms, **lift.to_dict(), "suites": len(scored)}


def _recovery_gaps(
    names: Sequence[str], teacher: Mapping[str, SuiteScore], before: Mapping[str, SuiteScore]
) -> dict[str, float]:
    """teacher - before for the suites with something to recover (recovery.py's rule: teacher > before)."""
    gaps = {}
    for name in names:
        t, b = teacher.get(name), before.get(name)
        if _scored(t) and _scored(b) and t.score > b.score:  # type: ignore[union-attr,operator]
            gaps[name] = t.score - b.score  # type: ignore[union-attr,operator]
    return gaps


def _scored(score: SuiteScore | None) -> bool:
    return score is not None and score.score is not None and score.n_items > 0
