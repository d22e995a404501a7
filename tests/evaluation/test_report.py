"""The report: its JSON schema, the Markdown a user reads, the plots, and the verdict of the gates."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import pytest

from lingudistill.evaluation import SuiteScore, build_report, write_report
from lingudistill.evaluation.report import render_markdown
from lingudistill.spec import JobSpec


def make_spec(**gates: float) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "repair",
            "student": "student",
            "teacher": "teacher",
            "mixture": [{"name": "text", "uri": "t.jsonl", "distill": True}, {"name": "vqa", "uri": "v.jsonl"}],
            "training": {"seed": 7},
            "evaluation": {
                "language": [{"name": "arc", "uri": "arc.jsonl"}, {"name": "hella", "uri": "h.jsonl"}],
                "vision": [{"name": "vqa", "uri": "vqa.jsonl"}],
                "gates": gates,
            },
        }
    )


def scores(kind: str, **values: float) -> dict[str, SuiteScore]:
    return {name: SuiteScore(name, kind, "acc_norm", v, {"acc_norm": v, "acc": v}, 20) for name, v in values.items()}  # type: ignore[arg-type]


def sample_report(**gates: float) -> dict:
    return build_report(
        make_spec(**gates),
        teacher=scores("language", arc=0.8, hella=0.5),
        before={**scores("language", arc=0.4, hella=0.6), **scores("vision", vqa=0.7)},
        after={**scores("language", arc=0.5, hella=0.65), **scores("vision", vqa=0.69)},
        metrics_path=None,
        provenance={"student": {"revision": "abc"}, "datasets": {"text": {"sha256": "00ff"}}},
    )


def test_report_json_schema_and_arithmetic() -> None:
    report = sample_report(min_recovery=0.2, max_vision_drop=0.05)
    json.dumps(report, allow_nan=False)
    assert set(report) == {
        "schema_version",
        "name",
        "passed",
        "language",
        "vision",
        "control",
        "lift",
        "gates",
        "training",
        "provenance",
    }
    assert report["control"] is None and report["lift"] is None  # no control arm
    arc, hella = report["language"]["suites"]
    assert arc == {
        "name": "arc",
        "metric": "acc_norm",
        "n_items": 20,
        "teacher": 0.8,
        "before": 0.4,
        "after": 0.5,
        "delta": pytest.approx(0.1),
        "recovery": pytest.approx(0.25),
        "recovery_note": None,
    }
    assert hella["recovery"] is None and "nothing to recover" in hella["recovery_note"]
    assert report["language"]["mean_recovery"] == pytest.approx(0.25)  # hella is not applicable
    assert report["language"]["average"] == {
        "teacher": pytest.approx(0.65),
        "before": pytest.approx(0.5),
        "after": pytest.approx(0.575),
    }
    assert report["language"]["recovery_of_average"] == pytest.approx(0.5)
    assert report["vision"]["suites"][0]["retention"] == pytest.approx(-0.01)
    assert report["vision"]["drop"] == pytest.approx(0.01)
    assert report["provenance"]["seed"] == 7 and report["provenance"]["spec"]["name"] == "repair"
    assert report["provenance"]["student"] == {"revision": "abc"}
    assert report["passed"] is True and [g["passed"] for g in report["gates"]] == [True, True]


def test_gates_decide_the_verdict() -> None:
    assert sample_report(min_recovery=0.3)["passed"] is False
    assert sample_report(max_vision_drop=0.005)["passed"] is False
    assert sample_report()["passed"] is True and sample_report()["gates"] == []


def test_a_job_without_suites_or_scores() -> None:
    spec = make_spec(min_recovery=0.1)
    spec = spec.model_copy(update={"evaluation": spec.evaluation.model_copy(update={"language": [], "vision": []})})
    report = build_report(spec, teacher={}, before={}, after={}, metrics_path=None, provenance={})
    assert report["language"]["suites"] == [] and report["language"]["mean_recovery"] is None
    assert report["vision"]["average"] == {"before": None, "after": None}
    assert report["passed"] is False  # a configured gate that could not be computed fails
    json.dumps(report, allow_nan=False)


def test_write_report_renders_markdown_and_plots(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        "".join(
            json.dumps(
                {
                    "step": s,
                    "loss": 3.0 / s,
                    "loss_ce": 2.0 / s,
                    "loss_kd": 1.0 / s,
                    "lr": 1e-3,
                    "grad_norm": 1.0,
                    "loss_ce/text": 2.5 / s,
                    "loss_kd/text": 1.0 / s,
                    "loss_ce/vqa": 1.5 / s,
                }
            )
            + "\n"
            for s in range(1, 6)
        )
        + '{"step": 6, "lo'  # a torn last line, as after a crash
    )
    report = build_report(
        make_spec(min_recovery=0.2),
        teacher=scores("language", arc=0.8, hella=0.5),
        before={**scores("language", arc=0.4, hella=0.6), **scores("vision", vqa=0.7)},
        after={**scores("language", arc=0.5, hella=0.65), **scores("vision", vqa=0.69)},
        metrics_path=metrics,
        provenance={},
    )
    assert report["training"]["steps"] == 5 and report["training"]["loss_last"] == pytest.approx(0.6)
    written = write_report(report, tmp_path / "out", metrics)
    names = {path.name for path in written}
    assert names == {"report.json", "report.md", "eval_items.json", "scores.svg", "loss.svg", "loss_by_source.svg"}
    for path in written:
        assert path.stat().st_size > 0
        if path.suffix == ".svg":
            root = ElementTree.parse(path).getroot()
            assert root.tag.endswith("svg") and len(root) > 5
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == report
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "**Verdict: PASSED**" in markdown
    assert "| arc | acc_norm | 20 | 0.8000 | 0.4000 | 0.5000 | +0.1000 | 0.2500 |" in markdown
    assert "n/a (the teacher" in markdown and "Mean recovery: 0.2500" in markdown
    assert "| min_recovery | 0.2000 | 0.2500 | pass |" in markdown
    assert "![loss_by_source](loss_by_source.svg)" in markdown
    loss_svg = (tmp_path / "out" / "loss_by_source.svg").read_text()
    assert "loss_ce/text" in loss_svg and "loss_kd/text" in loss_svg


def test_write_report_without_metrics_still_plots_scores(tmp_path: Path) -> None:
    written = write_report(sample_report(), tmp_path, None)
    assert sorted(path.name for path in written) == ["eval_items.json", "report.json", "report.md", "scores.svg"]


def test_provenance_is_rendered_for_people_not_as_json(tmp_path: Path) -> None:
    sha = "ab" * 32
    report = build_report(
        make_spec(),
        teacher={},
        before={},
        after={},
        metrics_path=None,
        provenance={
            "student": {"uri": "hf://Org/VLM@abc", "location": "Org/VLM", "revision": "abc"},
            "datasets": {
                "text": {"uri": "dataset://ds_1", "records": 256, "sha256": sha},
                "vqa": {"uri": "dataset://ds_2", "records": 64, "sha256": None},
            },
        },
    )
    markdown = render_markdown(report, [])
    provenance = markdown.split("## Provenance", 1)[1]
    assert "- **seed**: 7" in provenance
    assert "- **student**: uri `hf://Org/VLM@abc`, location `Org/VLM`, revision `abc`" in provenance
    assert "| datasets | uri | records | sha256 |" in provenance
    assert "| text | `dataset://ds_1` | 256 | `abababababab…` |" in provenance
    assert "| vqa | `dataset://ds_2` | 64 | – |" in provenance
    assert "{" not in provenance  # no raw JSON
