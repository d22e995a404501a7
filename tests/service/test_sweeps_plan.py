"""Sweep planning and selection, pure functions: grid expansion, random sampling, dotted-path overrides, the
control's rule and the choice of the best arm."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from lingudistill.spec import JobSpec
from service.errors import InvalidSweep, SweepTooLarge
from service.sweeps.schemas import RandomSampling, SweepIn
from service.sweeps.service import (
    PlannedArm,
    apply_overrides,
    arm_spec,
    choose_best,
    metric_value,
    plan_arms,
    sampled_overrides,
)

BASE: dict[str, Any] = {
    "name": "repair",
    "student": "s3://models/student",
    "teacher": "hf://Qwen/Qwen2-1.5B-Instruct@main",
    "mixture": [{"name": "text", "uri": "s3://data/text.jsonl", "distill": True}],
    "training": {"max_steps": 10, "seed": 3},
}


def request(grid: dict[str, list[Any]], **extra: Any) -> SweepIn:
    return SweepIn.model_validate({"base": BASE, "grid": grid, **extra})


def test_the_grid_is_every_combination_the_last_path_fastest_and_the_control_last() -> None:
    arms = plan_arms(request({"method.kd_weight": [0.5, 1], "method.kv_sharing": ["prompt", "off"]}, control=True), 64)
    assert [a.label for a in arms] == [
        "method.kd_weight=0.5,method.kv_sharing=prompt",
        "method.kd_weight=0.5,method.kv_sharing=off",
        "method.kd_weight=1,method.kv_sharing=prompt",
        "method.kd_weight=1,method.kv_sharing=off",
        "control",
    ]
    assert arms[-1].control and arms[-1].overrides == {"method.kd_sources": "none"}
    assert arms[0].overrides == {"method.kd_weight": 0.5, "method.kv_sharing": "prompt"}


def test_random_sampling_is_reproducible_distinct_and_within_the_grid() -> None:
    grid = {
        "method.kd_weight": [0.25, 0.5, 1, 2],
        "method.temperature": [1, 2, 4],
        "method.kv_sharing": ["prompt", "off"],
    }
    first = sampled_overrides(grid, RandomSampling(type="random", n_arms=5, seed=11))
    again = sampled_overrides(grid, RandomSampling(type="random", n_arms=5, seed=11))
    other = sampled_overrides(grid, RandomSampling(type="random", n_arms=5, seed=12))
    assert first == again and first != other
    assert len({tuple(o.items()) for o in first}) == 5
    every = sampled_overrides(grid, RandomSampling(type="random", n_arms=24, seed=0))
    assert sorted(map(repr, every)) == sorted(map(repr, sampled_overrides(grid, request(grid).sampling)))


def test_random_sampling_never_enumerates_a_huge_grid() -> None:
    grid = {f"method.p{i}": list(range(50)) for i in range(12)}  # 50^12 combinations
    drawn = sampled_overrides(grid, RandomSampling(type="random", n_arms=3, seed=1))
    assert len(drawn) == 3 and all(set(o) == set(grid) for o in drawn)


def test_more_random_arms_than_combinations_is_refused() -> None:
    with pytest.raises(InvalidSweep, match=r"more than the grid.s 2 combinations"):
        sampled_overrides({"method.kd_weight": [1, 2]}, RandomSampling(type="random", n_arms=3, seed=0))


def test_a_sweep_over_the_arm_limit_is_refused_counting_the_control() -> None:
    grid = {"method.kd_weight": [0.5, 1, 2], "method.temperature": [1, 2]}
    assert len(plan_arms(request(grid, control=True), 7)) == 7
    with pytest.raises(SweepTooLarge, match=r"7 arms; a sweep may have at most 6"):
        plan_arms(request(grid, control=True), 6)


def test_a_control_is_refused_when_a_grid_path_is_outside_method() -> None:
    with pytest.raises(InvalidSweep) as caught:
        plan_arms(request({"method.kd_weight": [1, 2], "training.lr": [1e-5, 2e-5]}, control=True), 64)
    assert "training.lr" in str(caught.value)
    assert [e.loc for e in caught.value.errors or []] == [["body", "grid", "training.lr"]]
    assert len(plan_arms(request({"training.lr": [1e-5, 2e-5]}), 64)) == 2  # without a control it is fine


def test_overrides_set_nested_fields_and_list_items() -> None:
    base = JobSpec.model_validate(BASE).model_dump(mode="json")  # every default written out, as the sweep does
    spec = apply_overrides(base, {"method.kd_weight": 2, "mixture.0.weight": 3.0}, "arm")
    assert spec["method"]["kd_weight"] == 2 and spec["mixture"][0]["weight"] == 3.0
    assert base["method"]["kd_weight"] == 1.0 and base["mixture"][0]["weight"] == 1.0  # the base is not changed


def test_an_unknown_path_is_an_error_naming_the_path_and_the_arm() -> None:
    base = JobSpec.model_validate(BASE).model_dump(mode="json")
    with pytest.raises(InvalidSweep) as caught:
        apply_overrides(base, {"method.kd_wieght": 2}, "method.kd_wieght=2")
    assert "arm method.kd_wieght=2" in str(caught.value) and "'kd_wieght'" in str(caught.value)
    assert caught.value.errors and caught.value.errors[0].loc == ["body", "grid", "method.kd_wieght"]
    with pytest.raises(InvalidSweep, match=r"mixture\.5"):
        apply_overrides(base, {"mixture.5.weight": 2}, "a")


def test_an_invalid_value_names_the_field_and_the_arm() -> None:
    base = request({"method.kd_weight": [1]}).base.resolved().model_dump(mode="json")
    arm = PlannedArm("method.kv_sharing=sideways", {"method.kv_sharing": "sideways"})
    with pytest.raises(InvalidSweep) as caught:
        arm_spec(base, arm, "repair-arm1")
    assert "arm method.kv_sharing=sideways" in str(caught.value)
    assert caught.value.errors and caught.value.errors[0].loc == ["body", "grid", "method.kv_sharing"]


def test_the_metric_is_read_by_dotted_path_and_suite_name() -> None:
    report = {
        "language": {
            "mean_recovery": 0.4,
            "suites": [{"name": "arc", "recovery": 0.7}, {"name": "mmlu", "recovery": None}],
        },
        "vision": {"drop": 0.01},
    }
    assert metric_value(report, "language.mean_recovery") == 0.4
    assert metric_value(report, "language.arc.recovery") == 0.7
    assert metric_value(report, "language.suites.arc.recovery") == 0.7
    assert metric_value(report, "language.mmlu.recovery") is None
    assert metric_value(report, "language.nope.recovery") is None
    assert metric_value(None, "language.mean_recovery") is None


def test_the_best_arm_is_the_max_or_min_and_arms_without_a_value_are_left_out() -> None:
    values = {"a": 0.2, "b": None, "c": 0.5, "d": -0.1}
    assert choose_best(values, "max") == "c"
    assert choose_best(values, "min") == "d"
    assert choose_best({"a": None}, "max") is None
    assert choose_best({"a": 1.0, "b": 1.0}, "max") == "a"


def test_a_value_repeated_in_the_grid_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"method.kd_weight repeats 1"):
        request({"method.kd_weight": [1, 2, 1]})
    assert len(plan_arms(request({"method.kd_weight": [1, 1.0, True]}), 64)) == 3  # three values, three labels


def test_an_arm_label_longer_than_the_column_is_refused() -> None:
    grid = {f"method.{'p' * 190}{i}": ["v" * 199] for i in range(4)}
    with pytest.raises(InvalidSweep, match="over 1000 characters"):
        plan_arms(request(grid), 64)
