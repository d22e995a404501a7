"""A method run against its control: the report's control and lift sections, the min_lift gate, eval_items.json, and
`lingudistill compare` on two finished run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from lingudistill.cli import main
from lingudistill.evaluation import SuiteScore, build_report, write_report
from lingudistill.evaluation.compare import CompareError, compare_runs, control_differences
from lingudistill.evaluation.report import read_item_scores, render_markdown
from lingudistill.spec import JobSpec

N = 40  # items per suite


def make_spec(kd_sources: str = "selective", seed: int = 7, **gates: float) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "repair",
            "student": "student",
            "teacher": "teacher",
            "mixture": [{"name": "text", "uri": "t.jsonl", "distill": True}, {"name": "vqa", "uri": "v.jsonl"}],
            "method": {"kd_sources": kd_sources},
            "training": {"seed": seed},
            "evaluation": {
                "language": [{"name": "arc", "uri": "arc.jsonl"}],
                "vision": [{"name": "vqa", "uri": "vqa.jsonl"}],
                "gates": gates,
                "control": kd_sources != "none",
            },
        }
    )


def scored(name: str, kind: str, right: int, n: int = N) -> SuiteScore:
    """`right` of the first items right, the rest wrong: arms built this way are paired item by item."""
    items = {f"{name}-{i}": float(i < right) for i in range(n)}
    return SuiteScore(name, kind, "acc_norm", right / n, {"acc_norm": right / n}, n, items)  # type: ignore[arg-type]


def arm(arc_right: int, vqa_right: int) -> dict[str, SuiteScore]:
    return {"arc": scored("arc", "language", arc_right), "vqa": scored("vqa", "vision", vqa_right)}


TEACHER = {"arc": scored("arc", "language", 36)}
BEFORE = arm(arc_right=8, vqa_right=30)  # teacher 0.9, before 0.2: a gap of 0.7


def report_with_control(control_arc: int = 12, **gates: float) -> dict:
    return build_report(
        make_spec(**gates),
        teacher=TEACHER,
        before=BEFORE,
        after=arm(arc_right=22, vqa_right=30),
        control=arm(arc_right=control_arc, vqa_right=29),
        metrics_path=None,
        provenance={},
    )


def test_control_section_is_shaped_like_the_methods_results() -> None:
    report = report_with_control()
    control = report["control"]
    assert set(control) == {"language", "vision"}
    assert set(control["language"]) == set(report["language"]) and set(control["vision"]) == set(report["vision"])
    assert control["language"]["suites"][0]["after"] == pytest.approx(12 / N)
    assert control["language"]["mean_recovery"] == pytest.approx((12 - 8) / (36 - 8))
    assert report["language"]["mean_recovery"] == pytest.approx((22 - 8) / (36 - 8))
    assert control["vision"]["retention"] == pytest.approx(-1 / N)


def test_lift_per_suite_and_for_the_mean_recovery() -> None:
    lift = report_with_control()["lift"]
    arc, vqa = lift["suites"]
    assert (arc["name"], arc["kind"], arc["n_items"]) == ("arc", "language", N)
    assert arc["estimate"] == pytest.approx(10 / N) and 0.0 < arc["low"] < arc["estimate"] < arc["high"]
    assert vqa["kind"] == "vision" and vqa["estimate"] == pytest.approx(1 / N)
    recovery = lift["mean_recovery"]
    assert recovery["estimate"] == pytest.approx(10 / 28)  # (22 - 12) items over a gap of 28 items
    assert recovery["low"] == pytest.approx(arc["low"] * N / 28)  # one suite: its own draws, scaled by 1/gap
    assert (lift["n_resamples"], lift["seed"], lift["confidence"]) == (2000, 7, 0.95)


@pytest.mark.parametrize(("threshold", "passed"), [(0.05, True), (0.5, False)])
def test_min_lift_gates_on_the_lower_bound(threshold: float, passed: bool) -> None:
    report = report_with_control(min_lift=threshold)
    (gate,) = report["gates"]
    assert gate["name"] == "min_lift" and gate["applicable"] is True
    assert gate["value"] == report["lift"]["mean_recovery"]["low"]
    assert gate["passed"] is passed and report["passed"] is passed


def test_min_lift_without_a_control_is_not_applicable_and_does_not_decide_the_verdict() -> None:
    spec = make_spec(min_lift=0.1, min_recovery=0.9)
    report = build_report(spec, teacher=TEACHER, before=BEFORE, after=arm(22, 30), metrics_path=None, provenance={})
    min_recovery, min_lift = report["gates"]
    assert min_lift["applicable"] is False and min_lift["passed"] is True and min_lift["value"] is None
    assert "no control arm" in min_lift["note"]
    assert report["passed"] is False and min_recovery["passed"] is False  # min_recovery still decides
    markdown = render_markdown(report, [])
    assert "| min_lift | 0.1000 | – | n/a |" in markdown and "Method against control" not in markdown


def test_markdown_renders_the_lift_table() -> None:
    markdown = render_markdown(report_with_control(), [])
    assert "## Method against control" in markdown
    assert "| suite | kind | metric | items | method | control | lift | 95% interval |" in markdown
    assert f"| arc | language | acc_norm | {N} | 0.5500 | 0.3000 | +0.2500 | [+" in markdown
    assert "| **mean recovery** | language | recovery |" in markdown


def test_eval_items_json_keeps_every_arm_item_by_item(tmp_path: Path) -> None:
    report = report_with_control()
    write_report(report, tmp_path, None)
    stored = read_item_scores(tmp_path)
    assert set(stored) == {"teacher", "before", "after", "control"}
    assert stored["control"]["arc"] == scored("arc", "language", 12)
    assert '"arc-0"' not in (tmp_path / "report.json").read_text()  # report.json stays small: no per-item scores


def finished_run(folder: Path, spec: JobSpec, after: dict[str, SuiteScore]) -> Path:
    report = build_report(spec, teacher=TEACHER, before=BEFORE, after=after, metrics_path=None, provenance={})
    write_report(report, folder, None)
    return folder


def test_compare_two_finished_runs(tmp_path: Path) -> None:
    method = finished_run(tmp_path / "method", make_spec(min_lift=0.05), arm(22, 30))
    control = finished_run(tmp_path / "control", make_spec("none"), arm(12, 29))
    report = compare_runs(method, control, n_resamples=500)
    assert report["lift"]["mean_recovery"]["estimate"] == pytest.approx(10 / 28)
    assert report["passed"] is True and report["provenance"]["control_run"] == str(control)


def test_a_control_must_differ_by_kd_alone(tmp_path: Path) -> None:
    assert control_differences(make_spec(), make_spec("none")) == []
    assert control_differences(make_spec(), make_spec("selective")) == [
        "the control trains with kd_sources selective, not none"
    ]
    assert control_differences(make_spec(), make_spec("none", seed=8)) == ["training differs"]
    method = finished_run(tmp_path / "method", make_spec(), arm(22, 30))
    other_seed = finished_run(tmp_path / "control", make_spec("none", seed=8), arm(12, 29))
    with pytest.raises(CompareError, match=r"is not a control of .*training differs"):
        compare_runs(method, other_seed)
    (other_seed / "eval_items.json").unlink()  # a run from before per-item scores were kept
    with pytest.raises(CompareError, match=r"control has no eval_items\.json"):
        compare_runs(method, other_seed)


def test_cli_compare_exit_codes_and_output(tmp_path: Path) -> None:
    method = finished_run(tmp_path / "method", make_spec(min_lift=0.05), arm(22, 30))
    runner = CliRunner()
    control = finished_run(tmp_path / "control", make_spec("none"), arm(12, 29))
    passed = runner.invoke(main, ["compare", str(method), str(control), "--output", str(tmp_path / "out")])
    assert passed.exit_code == 0, passed.output
    assert "| **mean recovery** |" in passed.output and "gate min_lift:" in passed.output
    assert json.loads((tmp_path / "out" / "report.json").read_text())["lift"]["mean_recovery"]["low"] > 0.05

    close = finished_run(tmp_path / "close", make_spec("none"), arm(21, 30))  # one item apart: no clear lift
    assert runner.invoke(main, ["compare", str(method), str(close)]).exit_code == 1

    fewer = {"arc": scored("arc", "language", 12, n=N - 1), "vqa": scored("vqa", "vision", 29)}
    mismatched = finished_run(tmp_path / "fewer", make_spec("none"), fewer)
    result = runner.invoke(main, ["compare", str(method), str(mismatched)])
    assert result.exit_code == 2 and f"item 'arc-{N - 1}' was scored by the method only" in result.output


def test_the_spec_accepts_a_control_and_a_min_lift_in_range() -> None:
    spec = make_spec(min_lift=0.02)
    assert spec.evaluation.control is True and spec.evaluation.gates.min_lift == 0.02
    assert JobSpec.model_validate({**make_spec().model_dump(), "evaluation": {}}).evaluation.control is False
    with pytest.raises(ValidationError, match="min_lift"):
        make_spec(min_lift=1000.0)
