"""The recovery report: what a user reads to decide whether the job worked.

`build_report` turns scores into one JSON-serialisable dict (schema below); `write_report` renders it as
report.json, report.md and SVG plots, and stores the per-item scores it was built from in eval_items.json
(read back by `read_item_scores`: what `lingudistill compare` pairs). The JSON is what GET /v1/jobs/{id}/report
serves; `control` and `lift` are null in a run without a control arm.

    {schema_version, name, passed,
     language: {metric_note, suites: [{name, metric, n_items, teacher, before, after, delta, recovery,
                                       recovery_note}],
                average: {teacher, before, after}, mean_recovery, recovery_of_average, applicable_suites},
     vision:   {suites: [{name, metric, n_items, before, after, retention}], average: {before, after},
                retention, drop},
     control:  {language: {...as above}, vision: {...as above}} | null      (the control arm's `after`)
     lift:     {method, confidence, n_resamples, seed,
                suites: [{name, kind, metric, method, control, estimate, low, high, n_items, note}],
                mean_recovery: {method, control, estimate, low, high, n_items, suites, note}} | null
     gates: [{name, threshold, value, passed, note, applicable?}],
     training: {steps, final: {...last metrics record}, loss_first, loss_last} | null,
     provenance: {spec, seed, ...whatever the caller passed}}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lingudistill.evaluation import plots
from lingudistill.evaluation.lift import DEFAULT_RESAMPLES, lift_section
from lingudistill.evaluation.recovery import evaluate_gates, language_rows, mean, recovery, vision_rows
from lingudistill.evaluation.scores import SuiteScore
from lingudistill.spec import JobSpec

SCHEMA_VERSION = 1
LOSS_KEYS = ("loss", "loss_ce", "loss_kd")
ITEM_SCORES_FILE = "eval_items.json"


class Report(dict):
    """The report dict, carrying the scores it was built from (`scores`: {arm: {suite: SuiteScore}}), so that
    write_report can store the per-item scores beside it (eval_items.json) without putting them in report.json."""

    scores: dict[str, dict[str, SuiteScore]]


def build_report(
    spec: JobSpec,
    *,
    teacher: dict[str, SuiteScore],
    before: dict[str, SuiteScore],
    after: dict[str, SuiteScore],
    metrics_path: Path | None,
    provenance: dict[str, Any],
    control: dict[str, SuiteScore] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> Report:
    """The report of one run; with `control` (the control arm's scores after training, same suites and items),
    also its `control` section and the `lift` of this run over it (lift.py; bootstrap seeded by training.seed)."""
    language_names = spec.evaluation.language_suite_names()
    vision_names = [suite.name for suite in spec.evaluation.vision]
    language = language_section(spec, language_names, teacher, before, after)
    vision = vision_section(vision_names, before, after)
    lift = None
    if control is not None:
        lift = lift_section(
            method=after,
            control=control,
            teacher=teacher,
            before=before,
            language_names=language_names,
            vision_names=vision_names,
            n_resamples=n_resamples,
            seed=spec.training.seed or 0,  # an unresolved spec has no seed; the interval must still be reproducible
        )
    gates = evaluate_gates(
        spec.evaluation.gates, mean_recovery=language["mean_recovery"], vision_drop=vision["drop"], lift=lift
    )
    report = Report(
        _json_safe(
            {
                "schema_version": SCHEMA_VERSION,
                "name": spec.name,
                "passed": all(gate["passed"] for gate in gates),
                "language": language,
                "vision": vision,
                "control": _control_section(spec, language_names, vision_names, teacher, before, control),
                "lift": lift,
                "gates": gates,
                "training": training_summary(metrics_path),
                "provenance": {"spec": spec.model_dump(mode="json"), "seed": spec.training.seed, **provenance},
            }
        )
    )
    report.scores = {"teacher": teacher, "before": before, "after": after, **({"control": control} if control else {})}
    return report


def language_section(
    spec: JobSpec,
    names: list[str],
    teacher: dict[str, SuiteScore],
    before: dict[str, SuiteScore],
    after: dict[str, SuiteScore],
) -> dict[str, Any]:
    rows = language_rows(names, teacher, before, after)
    average = {when: mean(row[when] for row in rows) for when in ("teacher", "before", "after")}
    return {
        "metric_note": _metric_note(spec),
        "suites": rows,
        "average": average,
        "mean_recovery": mean(row["recovery"] for row in rows),
        "recovery_of_average": recovery(average["teacher"], average["before"], average["after"]).value,
        "applicable_suites": sum(row["recovery"] is not None for row in rows),
    }


def vision_section(names: list[str], before: dict[str, SuiteScore], after: dict[str, SuiteScore]) -> dict[str, Any]:
    rows = vision_rows(names, before, after)
    retention = mean(row["retention"] for row in rows)
    return {
        "suites": rows,
        "average": {when: mean(row[when] for row in rows) for when in ("before", "after")},
        "retention": retention,
        "drop": 0.0 - retention if retention is not None else None,  # 0.0 - x: never -0.0
    }


def _control_section(
    spec: JobSpec,
    language_names: list[str],
    vision_names: list[str],
    teacher: dict[str, SuiteScore],
    before: dict[str, SuiteScore],
    control: dict[str, SuiteScore] | None,
) -> dict[str, Any] | None:
    """The control arm's results, shaped like the run's own: its `after` against the shared teacher and before."""
    if control is None:
        return None
    return {
        "language": language_section(spec, language_names, teacher, before, control),
        "vision": vision_section(vision_names, before, control),
    }


def _metric_note(spec: JobSpec) -> str:
    note = "primary metric per suite: acc_norm for multiple choice, exact_match for short answers"
    if spec.evaluation.harness is not None:
        note += "; lm-evaluation-harness tasks: acc_norm, else acc, else exact_match, as the task reports them"
    return note


def training_summary(metrics_path: Path | None) -> dict[str, Any] | None:
    records = read_metrics(metrics_path)
    if not records:
        return None
    return {
        "steps": records[-1].get("step", len(records)),
        "loss_first": records[0].get("loss"),
        "loss_last": records[-1].get("loss"),
        "final": records[-1],
    }


def read_metrics(metrics_path: Path | None) -> list[dict[str, Any]]:
    """The per-step records of metrics.jsonl; a missing file, or a torn last line, is tolerated."""
    if metrics_path is None or not Path(metrics_path).is_file():
        return []
    records = []
    for line in Path(metrics_path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written when the job stopped
        if isinstance(record, dict):
            records.append(record)
    return records


def write_report(report: dict[str, Any], output_dir: Path, metrics_path: Path | None) -> list[Path]:
    """report.json, report.md, the plots and (for a Report from build_report) eval_items.json into `output_dir`;
    returns the paths written."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    charts = _charts(report, read_metrics(metrics_path))
    written = []
    scores = getattr(report, "scores", None)
    if scores is not None:
        written.append(write_item_scores(scores, output_dir))
    for name, svg in charts.items():
        path = output_dir / name
        path.write_text(svg, encoding="utf-8")
        written.append(path)
    markdown = output_dir / "report.md"
    markdown.write_text(render_markdown(report, list(charts)), encoding="utf-8")
    json_path = output_dir / "report.json"
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return [json_path, markdown, *written]


def write_item_scores(scores: dict[str, dict[str, SuiteScore]], output_dir: Path) -> Path:
    """eval_items.json: {schema_version, <arm>: {suite: SuiteScore.to_dict() with its per-item scores}}, the arms
    being teacher, before, after (and control in a combined report)."""
    content = {arm: {name: score.to_dict() for name, score in by_suite.items()} for arm, by_suite in scores.items()}
    path = Path(output_dir) / ITEM_SCORES_FILE
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION, **content}) + "\n", encoding="utf-8")
    return path


def read_item_scores(output_dir: Path) -> dict[str, dict[str, SuiteScore]]:
    """eval_items.json of a finished run, {arm: {suite: SuiteScore}}; FileNotFoundError naming it when absent."""
    stored = json.loads((Path(output_dir) / ITEM_SCORES_FILE).read_text(encoding="utf-8"))
    stored.pop("schema_version", None)
    return {arm: {name: SuiteScore.from_dict(s) for name, s in by_suite.items()} for arm, by_suite in stored.items()}


# --- plots ----------------------------------------------------------------------------------------------------------
def _charts(report: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, str]:
    charts = {"scores.svg": _scores_chart(report)}
    if records:
        charts["loss.svg"] = plots.line_chart(
            _series(records, [key for key in LOSS_KEYS if any(key in r for r in records)]),
            title="Training loss",
            x_label="optimiser step",
            y_label="loss (mean per response token)",
        )
        per_source = sorted({key for r in records for key in r if key.startswith(("loss_ce/", "loss_kd/"))})
        if per_source:
            charts["loss_by_source.svg"] = plots.line_chart(
                _series(records, per_source), title="Loss per source", x_label="optimiser step", y_label="loss"
            )
    return charts


def _series(records: list[dict[str, Any]], keys: list[str]) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {key: [] for key in keys}
    for n, record in enumerate(records, start=1):
        step = float(record.get("step", n))
        for key in keys:
            value = record.get(key)
            if isinstance(value, int | float):
                series[key].append((step, float(value)))
    return series


def _scores_chart(report: dict[str, Any]) -> str:
    rows = report["language"]["suites"] + report["vision"]["suites"]
    groups = [f"{row['name']} ({'lang' if 'recovery' in row else 'vision'})" for row in rows]
    series = {when: [row.get(when) for row in rows] for when in ("teacher", "before", "after")}
    return plots.bar_chart(groups, series, title="Scores: teacher, student before and after", y_label="score")


# --- Markdown -------------------------------------------------------------------------------------------------------
def render_markdown(report: dict[str, Any], charts: list[str]) -> str:
    language, vision = report["language"], report["vision"]
    lines = [f"# Recovery report: {report['name']}", "", f"**Verdict: {'PASSED' if report['passed'] else 'FAILED'}**"]
    lines += ["", "## Gates", ""]
    if report["gates"]:
        lines += ["| gate | threshold | value | result | |", "|---|---|---|---|---|"]
        for gate in report["gates"]:
            result = _gate_result(gate)
            lines.append(
                f"| {gate['name']} | {_fmt(gate['threshold'])} | {_fmt(gate['value'])} | {result} | {gate['note']} |"
            )
    else:
        lines.append("No gates configured.")
    lines += [
        "",
        "## Language and knowledge",
        "",
        f"Recovery = (after − before) / (teacher − before). {language['metric_note']}.",
        "",
    ]
    if language["suites"]:
        lines += [
            "| suite | metric | items | teacher | before | after | Δ | recovery |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in language["suites"]:
            rec = _fmt(row["recovery"]) if row["recovery"] is not None else f"n/a ({row['recovery_note']})"
            lines.append(
                f"| {row['name']} | {row['metric'] or ''} | {row['n_items']} | {_fmt(row['teacher'])} | "
                f"{_fmt(row['before'])} | {_fmt(row['after'])} | {_signed(row['delta'])} | {rec} |"
            )
        average = language["average"]
        cells = " | ".join(_fmt(average[when]) for when in ("teacher", "before", "after"))
        lines.append(f"| **average** | | | {cells} | | |")
        lines += [
            "",
            f"**Mean recovery: {_fmt(language['mean_recovery'])}** "
            f"(over {language['applicable_suites']} applicable suite(s)); "
            f"recovery of the average: {_fmt(language['recovery_of_average'])}.",
        ]
    else:
        lines.append("No language suites.")
    lines += ["", "## Vision", "", "Retention = after − before.", ""]
    if vision["suites"]:
        lines += ["| suite | metric | items | before | after | retention |", "|---|---|---|---|---|---|"]
        for row in vision["suites"]:
            lines.append(
                f"| {row['name']} | {row['metric'] or ''} | {row['n_items']} | {_fmt(row['before'])} | "
                f"{_fmt(row['after'])} | {_signed(row['retention'])} |"
            )
        average = vision["average"]
        cells = f"{_fmt(average['before'])} | {_fmt(average['after'])} | {_signed(vision['retention'])}"
        lines.append(f"| **average** | | | {cells} |")
    else:
        lines.append("No vision suites.")
    lines += lift_lines(report)
    lines += _training_lines(report.get("training"))
    if charts:
        lines += ["", "## Plots", ""] + [f"![{name.removesuffix('.svg')}]({name})" for name in charts]
    lines += _provenance_lines(report.get("provenance", {}))
    return "\n".join(lines) + "\n"


def lift_lines(report: dict[str, Any]) -> list[str]:
    """The "Method against control" section: each suite's and the mean recovery's lift with its interval."""
    lift = report.get("lift")
    if not lift:
        return []
    percent = round(lift["confidence"] * 100)
    lines = [
        "",
        "## Method against control",
        "",
        f"Lift = method − control on the same items; {percent}% interval: {lift['method']} "
        f"({lift['n_resamples']} resamples, seed {lift['seed']}). The control is this job with kd_sources: none.",
        "",
        f"| suite | kind | metric | items | method | control | lift | {percent}% interval |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in lift["suites"]:
        lines.append(
            f"| {row['name']} | {row['kind']} | {row['metric'] or ''} | {row['n_items']} | {_fmt(row['method'])} | "
            f"{_fmt(row['control'])} | {_signed(row['estimate'])} | {_interval(row)} |"
        )
    recovery_lift = lift["mean_recovery"]
    lines.append(
        f"| **mean recovery** | language | recovery | {recovery_lift['n_items']} | {_fmt(recovery_lift['method'])} | "
        f"{_fmt(recovery_lift['control'])} | {_signed(recovery_lift['estimate'])} | {_interval(recovery_lift)} |"
    )
    return lines


def _interval(lift: dict[str, Any]) -> str:
    if lift["low"] is None or lift["high"] is None:
        return f"n/a ({lift['note']})" if lift.get("note") else "n/a"
    return f"[{_signed(lift['low'])}, {_signed(lift['high'])}]"


def _gate_result(gate: dict[str, Any]) -> str:
    if gate.get("applicable") is False:
        return "n/a"
    return "pass" if gate["passed"] else "FAIL"


def _training_lines(training: dict[str, Any] | None) -> list[str]:
    if not training:
        return []
    final = training["final"]
    parts = [f"{key} {_fmt(final[key])}" for key in LOSS_KEYS if isinstance(final.get(key), int | float)]
    return [
        "",
        "## Training",
        "",
        f"{training['steps']} optimiser steps; loss {_fmt(training['loss_first'])} → "
        f"{_fmt(training['loss_last'])}; last step: {', '.join(parts)}.",
    ]


def _provenance_lines(provenance: dict[str, Any]) -> list[str]:
    """Scalars and flat mappings as bullets, a mapping of mappings (the datasets) as a table; the full values,
    and the resolved spec, stay in report.json."""
    bullets, tables = [], []
    for key, value in provenance.items():
        if key == "spec":
            continue
        if isinstance(value, dict) and value and all(isinstance(item, dict) for item in value.values()):
            tables += ["", *_provenance_table(key, value)]
        else:
            bullets.append(f"- **{key}**: {_provenance_value(value)}")
    bullets.append("- **spec**: the resolved job spec is in report.json under `provenance.spec`.")
    return ["", "## Provenance", "", *bullets, *tables]


def _provenance_table(title: str, rows: dict[str, dict[str, Any]]) -> list[str]:
    columns = list(dict.fromkeys(column for row in rows.values() for column in row))
    lines = [f"| {title} | {' | '.join(columns)} |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {' | '.join(_provenance_cell(row.get(column)) for column in columns)} |")
    return lines


def _provenance_value(value: Any) -> str:
    if isinstance(value, dict):
        parts = [f"{key} {_provenance_cell(item)}" for key, item in value.items() if item is not None]
        return ", ".join(parts) or "–"
    if isinstance(value, list):
        return ", ".join(_provenance_cell(item) for item in value) or "–"
    return _provenance_cell(value)


def _provenance_cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool | int | float):
        return str(value)
    if isinstance(value, dict | list):
        return f"`{json.dumps(value, sort_keys=True)}`"
    text = str(value).replace("|", "\\|")
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        text = text[:12] + "…"  # a sha256: enough to tell files apart; report.json has all of it
    return f"`{text}`"


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.4f}"


def _json_safe(value: Any) -> Any:
    """Non-finite floats become None, so the report is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few lines for a terminal: averages before/after, recovery, vision retention, each gate and the verdict."""
    language, vision = report["language"], report["vision"]
    lines = []
    if language["suites"]:
        average = language["average"]
        lines.append(
            f"language average: teacher {_fmt(average['teacher'])}, before {_fmt(average['before'])}, "
            f"after {_fmt(average['after'])}; mean recovery {_fmt(language['mean_recovery'])}"
        )
    if vision["suites"]:
        average = vision["average"]
        lines.append(
            f"vision average: before {_fmt(average['before'])}, after {_fmt(average['after'])}; "
            f"retention {_signed(vision['retention'])}"
        )
    lift = report.get("lift")
    if lift:
        recovery_lift = lift["mean_recovery"]
        lines.append(
            f"mean recovery: method {_fmt(recovery_lift['method'])}, control {_fmt(recovery_lift['control'])}; "
            f"lift {_signed(recovery_lift['estimate'])} {_interval(recovery_lift)}"
        )
    for gate in report["gates"]:
        result = _gate_result(gate)
        lines.append(f"gate {gate['name']}: {_fmt(gate['value'])} vs {_fmt(gate['threshold'])}: {result}")
    lines.append(f"verdict: {'PASSED' if report['passed'] else 'FAILED'}")
    return lines
