// The recovery report as tables (shared by the job page and the comparison).

import { h, number, percent, points, pointsChange } from "./dom.js";

export function verdict(report) {
  return h(
    "p",
    { class: `verdict-banner ${report.passed ? "pass" : "fail"}`, "data-verdict": report.passed ? "passed" : "failed" },
    h("strong", {}, report.passed ? "✓ Passed" : "✗ Failed"),
    report.passed ? " — every quality gate passed." : " — at least one quality gate failed.",
  );
}

export function gatesTable(report) {
  return table(
    "Quality gates",
    ["Gate", "Threshold", "Value", "Verdict", "Note"],
    report.gates.map((gate) => [
      h("code", {}, gate.name),
      gateNumber(gate.name, gate.threshold),
      gateNumber(gate.name, gate.value),
      gateVerdict(gate),
      gate.note || "",
    ]),
    "gates-table",
  );
}

export function languageTable(report) {
  const language = report.language;
  const rows = language.suites.map((suite) => [
    suite.name,
    suite.metric || "",
    suite.n_items ?? "—",
    percent(suite.teacher),
    percent(suite.before),
    percent(suite.after),
    pointsChange(suite.delta),
    suite.recovery === null || suite.recovery === undefined
      ? h("span", { title: suite.recovery_note || "" }, "n/a")
      : percent(suite.recovery),
  ]);
  rows.push([
    h("strong", {}, "Average"),
    "",
    "",
    percent(language.average.teacher),
    percent(language.average.before),
    percent(language.average.after),
    "",
    h("strong", {}, language.mean_recovery === null ? "n/a" : percent(language.mean_recovery)),
  ]);
  const notes = language.suites.filter((suite) => suite.recovery_note).map((suite) => h("li", {}, `${suite.name}: ${suite.recovery_note}`));
  return h(
    "div",
    {},
    table("Language suites: scores in %, Δ in percentage points (pp), recovery = (after − before) / (teacher − before)", ["Suite", "Metric", "Items", "Teacher", "Before", "After", "Δ", "Recovery"], rows, "language-table"),
    notes.length ? h("ul", { class: "notes small muted" }, notes) : null,
  );
}

export function visionTable(report) {
  const vision = report.vision;
  const rows = vision.suites.map((suite) => [suite.name, suite.metric || "", suite.n_items ?? "—", percent(suite.before), percent(suite.after), pointsChange(suite.retention)]);
  rows.push([h("strong", {}, "Average"), "", "", percent(vision.average.before), percent(vision.average.after), pointsChange(vision.retention)]);
  return table("Vision suites: scores in %, retention = after − before in percentage points (pp)", ["Suite", "Metric", "Items", "Before", "After", "Retention"], rows, "vision-table");
}

/** The job against its control arm (the same job without KD): the lift per suite and of the mean recovery, each
 * with its 95% paired-bootstrap interval. An interval that lies above 0 is a lift the items support. */
export function liftTable(report) {
  const lift = report.lift;
  const interval = (row) => (row.low === null || row.low === undefined ? h("span", { title: row.note || "" }, "n/a") : `${pointsChange(row.low)} to ${pointsChange(row.high)}`);
  const rows = lift.suites.map((suite) => [suite.name, suite.kind, suite.n_items ?? "—", percent(suite.method), percent(suite.control), pointsChange(suite.estimate), interval(suite)]);
  const mean = lift.mean_recovery;
  rows.push([h("strong", {}, "Mean recovery"), "language", "", percent(mean.method), percent(mean.control), h("strong", {}, pointsChange(mean.estimate)), interval(mean)]);
  const notes = [...lift.suites, mean].filter((row) => row.note).map((row) => h("li", {}, `${row.name || "mean recovery"}: ${row.note}`));
  const caption = `Method against control: scores in %, lift = method − control in percentage points (pp), ${Math.round((lift.confidence ?? 0.95) * 100)}% paired bootstrap interval (${lift.n_resamples} resamples)`;
  return h("div", {}, table(caption, ["Suite", "Kind", "Items", "Method", "Control", "Lift", "95% interval"], rows, "lift-table"), notes.length ? h("ul", { class: "notes small muted" }, notes) : null);
}

export function table(caption, headers, rows, id) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { id },
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col" }, name)))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell, i) => (i === 0 ? h("th", { scope: "row" }, cell) : h("td", {}, cell)))))),
    ),
  );
}

/** Gate values in the unit of what they bound: a recovery is a percent, a drop is in percentage points. */
// A gate that does not apply (min_lift without a control arm) says so rather than "pass".
function gateVerdict(gate) {
  if (gate.applicable === false) return h("span", { class: "verdict na" }, "n/a");
  return h("span", { class: gate.passed ? "verdict pass" : "verdict fail" }, gate.passed ? "✓ pass" : "✗ fail");
}

export function gateNumber(name, value) {
  if (name.includes("lift")) return pointsChange(value);
  if (name.includes("recovery")) return percent(value);
  if (name.includes("drop")) return points(value);
  return number(value);
}
