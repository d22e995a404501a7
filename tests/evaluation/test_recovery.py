"""Recovery arithmetic and its edge cases, and the gates."""

from __future__ import annotations

import pytest

from lingudistill.evaluation import SuiteScore, evaluate_gates, recovery
from lingudistill.evaluation.recovery import language_rows, mean
from lingudistill.spec import GatesSpec


def test_recovery_is_the_share_of_the_lost_score_won_back() -> None:
    assert recovery(teacher=0.8, before=0.4, after=0.5).value == pytest.approx(0.25)
    assert recovery(teacher=0.8, before=0.4, after=0.8).value == pytest.approx(1.0)
    assert recovery(teacher=0.8, before=0.4, after=0.9).value == pytest.approx(1.25)  # beyond the teacher


def test_negative_recovery_when_the_job_made_it_worse() -> None:
    assert recovery(teacher=0.8, before=0.4, after=0.3).value == pytest.approx(-0.25)


@pytest.mark.parametrize(("teacher", "before"), [(0.5, 0.5), (0.4, 0.5)])
def test_no_degradation_is_not_applicable_and_never_divides_by_zero(teacher: float, before: float) -> None:
    result = recovery(teacher=teacher, before=before, after=0.7)
    assert result.value is None and not result.applicable
    assert "nothing to recover" in (result.reason or "")


def test_an_empty_suite_is_not_applicable_and_left_out_of_the_mean() -> None:
    def score(name: str, value: float | None, n: int = 10) -> SuiteScore:
        return SuiteScore(name, "language", "acc_norm", value, {"acc_norm": value} if value is not None else {}, n)

    teacher = {"a": score("a", 0.9), "empty": score("empty", None, 0), "flat": score("flat", 0.5)}
    before = {"a": score("a", 0.5), "empty": score("empty", None, 0), "flat": score("flat", 0.6)}
    after = {"a": score("a", 0.6), "empty": score("empty", None, 0), "flat": score("flat", 0.6)}
    rows = language_rows(["a", "empty", "flat"], teacher, before, after)
    assert [row["recovery"] for row in rows] == [pytest.approx(0.25), None, None]
    assert rows[1]["recovery_note"] == "the suite has no items"
    assert mean(row["recovery"] for row in rows) == pytest.approx(0.25)
    assert mean([]) is None


def test_gates_pass_and_fail() -> None:
    gates = GatesSpec(min_recovery=0.05, max_vision_drop=0.01)
    passing = evaluate_gates(gates, mean_recovery=0.1, vision_drop=0.01)
    assert [(g["name"], g["passed"]) for g in passing] == [("min_recovery", True), ("max_vision_drop", True)]
    failing = evaluate_gates(gates, mean_recovery=0.01, vision_drop=0.02)
    assert [g["passed"] for g in failing] == [False, False]
    assert failing[0] == {
        "name": "min_recovery",
        "threshold": 0.05,
        "value": 0.01,
        "passed": False,
        "note": "mean language recovery",
    }
    # a gate that cannot be computed fails: CI must not pass on a check that did not run
    unknown = evaluate_gates(gates, mean_recovery=None, vision_drop=None)
    assert [g["passed"] for g in unknown] == [False, False]
    assert evaluate_gates(GatesSpec(), mean_recovery=None, vision_drop=None) == []
