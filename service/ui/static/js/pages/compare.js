// Compare two jobs: settings that differ, loss curves overlaid, and the reports side by side.

import { api } from "../api.js";
import { chartControls, LineChart } from "../chart.js";
import { clear, errorBox, field, h, navigate, percent, points, pointsChange, routeQuery, statusBadge } from "../dom.js";
import { MetricSeries } from "../metrics.js";
import { gateNumber, table } from "../report.js";

const COLOURS = ["#1d4ed8", "#b45309"];

export async function renderCompare(main) {
  const query = routeQuery();
  const ids = [query.get("a") || "", query.get("b") || ""];
  const recent = await api("/v1/jobs", { query: { limit: 100 } }).then((page) => page.items).catch(() => []);
  const list = h("datalist", { id: "recent-jobs" }, recent.map((job) => h("option", { value: job.id }, `${job.name} (${job.status})`)));
  const inputs = ids.map((id) => h("input", { type: "text", value: id, list: "recent-jobs", autocomplete: "off", class: "mono" }));
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "compare-title" },
    h("h1", { id: "compare-title" }, "Compare jobs"),
    h("p", { class: "hint" }, "Pick two jobs — for example LinguDistill against the plain fine-tuning baseline (kd_sources: none). Type to search recent jobs by id, or select two in the jobs table."),
    h("div", { class: "grid-2" }, field("compare-a", "Job A", inputs[0]), field("compare-b", "Job B", inputs[1])),
    list,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "button" }, "Compare")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    navigate("/compare", { a: inputs[0].value.trim(), b: inputs[1].value.trim() });
  });
  const body = h("div", { id: "comparison" });
  clear(main, form, body);
  if (!ids[0] || !ids[1]) return null;

  let jobs;
  try {
    jobs = await Promise.all(ids.map((id) => api(`/v1/jobs/${encodeURIComponent(id)}`)));
  } catch (error) {
    clear(body, errorBox(error));
    return null;
  }
  const [reports, series] = await Promise.all([
    Promise.all(jobs.map((job) => api(`/v1/jobs/${job.id}/report`).catch(() => null))),
    Promise.all(
      jobs.map(async (job) => {
        const metrics = new MetricSeries(api, job.id, { maxPoints: 300, names: ["loss", "loss_ce", "loss_kd", "tokens_per_s"] });
        await metrics.refresh().catch(() => null);
        return metrics;
      }),
    ),
  ]);
  const label = (i) => `${"AB"[i]}: ${jobs[i].name}`;
  const overlay = (name) =>
    series.flatMap((metrics, i) => metrics.pick([name]).map((one) => ({ ...one, label: label(i), colour: COLOURS[i], dash: i ? [6, 3] : [] })));
  const charts = [
    ["cmp-loss", "Total loss", "loss", "loss"],
    ["cmp-ce", "Cross-entropy", "loss", "loss_ce"],
    ["cmp-kd", "KD term", "loss", "loss_kd"],
    ["cmp-tps", "Throughput", "tokens/s", "tokens_per_s"],
  ].map(([id, title, yLabel, metric]) => Object.assign(new LineChart({ id, title, yLabel }), { metric }));

  clear(
    body,
    h(
      "div",
      { class: "two-col" },
      jobs.map((job, i) =>
        h(
          "section",
          { class: "card", "aria-label": `Job ${"AB"[i]}` },
          h("h2", {}, h("a", { href: `#/jobs/${job.id}` }, label(i)), " ", statusBadge(job.status)),
          h(
            "dl",
            { class: "facts" },
            [
              ["kd_sources", job.spec.method.kd_sources],
              ["kv_sharing", job.spec.method.kv_sharing],
              ["divergence", job.spec.method.divergence],
              ["steps", `${job.progress.step ?? 0} / ${job.progress.total_steps}`],
              ["verdict", reports[i] ? (reports[i].passed ? "✓ passed" : "✗ failed") : "no report"],
              ["mean recovery", reports[i] ? percent(reports[i].language.mean_recovery) : "—"],
            ].map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value))),
          ),
        ),
      ),
    ),
    h(
      "section",
      { class: "card", "aria-labelledby": "cmp-curves" },
      h("h2", { id: "cmp-curves" }, "Curves"),
      chartControls(() => charts),
      h("div", { class: "charts" }, charts.map((chart) => chart.element)),
    ),
    h("section", { class: "card", "aria-labelledby": "cmp-report" }, h("h2", { id: "cmp-report" }, "Reports"), reportComparison(jobs, reports)),
    h("section", { class: "card", "aria-labelledby": "cmp-spec" }, h("h2", { id: "cmp-spec" }, "Settings that differ"), specDiff(jobs)),
  );
  for (const chart of charts) chart.update(overlay(chart.metric));
  return () => charts.forEach((chart) => chart.destroy());
}

function reportComparison(jobs, reports) {
  if (!reports[0] && !reports[1]) return h("p", { class: "muted" }, "Neither job has a report yet.");
  const rows = [];
  const suiteNames = (kind) => [...new Set(reports.flatMap((report) => (report ? report[kind].suites.map((s) => s.name) : [])))];
  const suite = (report, kind, name) => report?.[kind].suites.find((s) => s.name === name);
  for (const name of suiteNames("language")) {
    const [a, b] = reports.map((report) => suite(report, "language", name));
    rows.push([`${name} (language): after`, percent(a?.after), percent(b?.after)]);
    rows.push([`${name}: recovery`, a?.recovery == null ? "n/a" : percent(a.recovery), b?.recovery == null ? "n/a" : percent(b.recovery)]);
  }
  for (const name of suiteNames("vision")) {
    const [a, b] = reports.map((report) => suite(report, "vision", name));
    rows.push([`${name} (vision): after`, percent(a?.after), percent(b?.after)]);
    rows.push([`${name}: retention`, pointsChange(a?.retention), pointsChange(b?.retention)]);
  }
  rows.push(["Mean recovery", ...reports.map((r) => (r && r.language.mean_recovery != null ? percent(r.language.mean_recovery) : "n/a"))]);
  rows.push(["Vision drop", ...reports.map((r) => points(r?.vision.drop))]);
  const gateNames = [...new Set(reports.flatMap((report) => (report ? report.gates.map((g) => g.name) : [])))];
  for (const gate of gateNames) {
    rows.push([
      `Gate ${gate}`,
      ...reports.map((report) => {
        const found = report?.gates.find((g) => g.name === gate);
        return found ? h("span", { class: found.passed ? "verdict pass" : "verdict fail" }, `${found.passed ? "✓" : "✗"} ${gateNumber(gate, found.value)}`) : "—";
      }),
    ]);
  }
  rows.push(["Verdict", ...reports.map((r) => (r ? h("strong", { class: r.passed ? "verdict pass" : "verdict fail" }, r.passed ? "✓ passed" : "✗ failed") : "no report"))]);
  return table("Report side by side", ["", `A: ${jobs[0].name}`, `B: ${jobs[1].name}`], rows, "compare-report");
}

function flatten(value, prefix = "", out = {}) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [key, inner] of Object.entries(value)) flatten(inner, prefix ? `${prefix}.${key}` : key, out);
  } else out[prefix] = JSON.stringify(value);
  return out;
}

function specDiff(jobs) {
  const [a, b] = jobs.map((job) => flatten(job.spec));
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((key) => a[key] !== b[key]).sort();
  if (!keys.length) return h("p", { class: "muted" }, "The specs are identical.");
  return table("Spec values that differ", ["Setting", "A", "B"], keys.map((key) => [h("code", {}, key), a[key] ?? "—", b[key] ?? "—"]), "compare-spec");
}
