"""The lift of a method over its control: paired by item, a stratified bootstrap, reproducible, and strict about
which items were scored."""

from __future__ import annotations

import numpy as np
import pytest

from lingudistill.evaluation import SuiteScore
from lingudistill.evaluation.lift import ItemMismatch, bootstrap_means, lift_section, paired_differences


def suite(name: str, hits: list[float], kind: str = "language") -> SuiteScore:
    items = {f"q{i}": float(h) for i, h in enumerate(hits)}
    score = sum(hits) / len(hits)
    return SuiteScore(name, kind, "acc_norm", score, {"acc_norm": score}, len(hits), items)  # type: ignore[arg-type]


def aggregate(name: str, score: float, n: int = 4) -> SuiteScore:
    return SuiteScore(name, "language", "acc_norm", score, {"acc_norm": score}, n)


def section(method: list[SuiteScore], control: list[SuiteScore], **options) -> dict:  # type: ignore[no-untyped-def]
    names = [s.name for s in method if s.kind == "language"]
    return lift_section(
        method={s.name: s for s in method},
        control={s.name: s for s in control},
        teacher={name: aggregate(name, 1.0) for name in names},
        before={name: aggregate(name, 0.0) for name in names},
        language_names=names,
        vision_names=[s.name for s in method if s.kind == "vision"],
        **options,
    )


def test_hand_computed_two_items() -> None:
    # differences [1, 0]: a resample's mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4, so with 4000
    # resamples the 2.5th percentile is 0 and the 97.5th is 1; teacher 1 and before 0 make recovery = score
    lift = section([suite("arc", [1, 1])], [suite("arc", [0, 1])], n_resamples=4000, seed=3)
    (row,) = lift["suites"]
    assert (row["estimate"], row["method"], row["control"]) == (0.5, 1.0, 0.5)
    assert (row["low"], row["high"], row["n_items"]) == (0.0, 1.0, 2)
    assert lift["mean_recovery"]["estimate"] == 0.5
    assert (lift["mean_recovery"]["low"], lift["mean_recovery"]["high"]) == (0.0, 1.0)


def test_identical_arms_have_zero_lift_and_a_zero_interval() -> None:
    arm = [suite("arc", [1, 0, 1, 1, 0, 0, 1]), suite("vqa", [1, 1, 0], "vision")]
    lift = section(arm, arm)
    for result in [*lift["suites"], lift["mean_recovery"]]:
        assert (result["estimate"], result["low"], result["high"]) == (0.0, 0.0, 0.0)


def test_a_clear_win_has_an_interval_above_zero() -> None:
    rng = np.random.default_rng(0)
    control = (rng.random(200) < 0.4).astype(float).tolist()
    method = [1.0 if c or rng.random() < 0.5 else 0.0 for c in control]  # right wherever the control is, and more
    lift = section([suite("arc", method)], [suite("arc", control)])
    row = lift["suites"][0]
    assert 0.0 < row["low"] < row["estimate"] < row["high"]
    assert lift["mean_recovery"]["low"] > 0.0


def test_the_same_seed_gives_the_same_interval_and_another_seed_another() -> None:
    method, control = [suite("arc", [1, 0, 1, 1, 0, 1, 1, 0, 1])], [suite("arc", [0, 0, 1, 0, 1, 1, 0, 0, 1])]
    assert section(method, control, seed=5) == section(method, control, seed=5)
    assert section(method, control, seed=6, n_resamples=500)["n_resamples"] == 500
    values = np.array([1.0, 0.0, 0.0, 1.0, -1.0])
    five, six = (bootstrap_means(values, 50, np.random.default_rng(seed)) for seed in (5, 6))
    assert not np.array_equal(five, six)


def test_mean_recovery_divides_each_suite_by_its_own_gap() -> None:
    # arc: teacher 0.75, before 0.25 (gap 0.5); method 0.5 recovers 0.5, control 0.25 recovers 0
    # hella: teacher 0.5, before 0.25 (gap 0.25); both arms score 0.25 and recover 0
    method = [suite("arc", [1, 1, 0, 0]), suite("hella", [1, 0, 0, 0])]
    control = [suite("arc", [1, 0, 0, 0]), suite("hella", [0, 1, 0, 0])]
    lift = lift_section(
        method={s.name: s for s in method},
        control={s.name: s for s in control},
        teacher={"arc": aggregate("arc", 0.75), "hella": aggregate("hella", 0.5)},
        before={"arc": aggregate("arc", 0.25), "hella": aggregate("hella", 0.25)},
        language_names=["arc", "hella"],
        vision_names=[],
    )
    recovery = lift["mean_recovery"]
    assert recovery["method"] == pytest.approx((0.25 / 0.5 + 0.0 / 0.25) / 2)
    assert recovery["control"] == pytest.approx(0.0)
    assert recovery["estimate"] == pytest.approx(0.25)
    assert (recovery["suites"], recovery["n_items"]) == (2, 8)


def test_a_suite_with_nothing_to_recover_is_left_out_of_the_mean_recovery() -> None:
    method, control = [suite("arc", [1, 1]), suite("easy", [1, 1])], [suite("arc", [0, 0]), suite("easy", [0, 0])]
    lift = lift_section(
        method={s.name: s for s in method},
        control={s.name: s for s in control},
        teacher={"arc": aggregate("arc", 1.0), "easy": aggregate("easy", 0.5)},
        before={"arc": aggregate("arc", 0.0), "easy": aggregate("easy", 0.5)},  # easy: teacher == before
        language_names=["arc", "easy"],
        vision_names=[],
    )
    assert lift["mean_recovery"]["suites"] == 1 and lift["mean_recovery"]["estimate"] == 1.0
    assert lift["suites"][1]["estimate"] == 1.0  # the suite's own lift is still reported


def test_mismatched_items_name_the_first_unpaired_item() -> None:
    method = suite("arc", [1, 0, 1])
    fewer = SuiteScore("arc", "language", "acc_norm", 0.5, {}, 2, {"q0": 1.0, "q1": 0.0})
    with pytest.raises(ItemMismatch, match=r"suite arc: .*3 vs 2 items; item 'q2' was scored by the method only"):
        section([method], [fewer])
    with pytest.raises(ItemMismatch, match="item 'x' was scored by the control only"):
        paired_differences("arc", {"q0": 1.0, "q1": 0.0}, {"q0": 1.0, "q1": 0.0, "x": 1.0})


def test_items_are_paired_by_key_not_by_position() -> None:
    forward = {"a": 1.0, "b": 0.0}
    assert paired_differences("s", forward, {"b": 0.0, "a": 0.0}).tolist() == [1.0, 0.0]


def test_without_per_item_scores_the_estimate_stands_but_there_is_no_interval() -> None:
    lift = section([aggregate("arc", 0.75)], [aggregate("arc", 0.5)])
    row = lift["suites"][0]
    assert (row["estimate"], row["low"], row["high"]) == (0.25, None, None)
    assert "no per-item scores" in row["note"]
    assert lift["mean_recovery"]["estimate"] == 0.25 and lift["mean_recovery"]["low"] is None


def test_chunking_the_draws_does_not_change_the_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.arange(5, dtype=float)
    whole = bootstrap_means(values, 7, np.random.default_rng(0))
    monkeypatch.setattr("lingudistill.evaluation.lift._DRAWS_PER_CHUNK", 10)  # two resamples per chunk
    chunked = bootstrap_means(values, 7, np.random.default_rng(0))
    assert chunked.shape == (7,)
    np.testing.assert_array_equal(chunked, whole)
