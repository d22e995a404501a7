// Sweeps: the list (#/sweeps) and one sweep (#/sweeps/{id}): its arms as a sortable table with the best arm and
// the control highlighted, the best arm's lift over the control, and the arms' loss curves overlaid.

import { api, FINAL } from "../api.js";
import { chartControls, LineChart, PALETTE } from "../chart.js";
import { clear, errorBox, h, number, percent, pointsChange, statusBadge, timeCell } from "../dom.js";
import { MetricSeries } from "../metrics.js";

const REFRESH_MS = 3000;

export async function renderSweeps(main) {
  const tbody = h("tbody");
  clear(
    main,
    h("div", { class: "page-head" }, h("h1", {}, "Sweeps")),
    h("p", { class: "hint" }, "A sweep runs one job per arm of a grid over a base spec (POST /v1/sweeps or `lingudistill sweep submit FILE`), then names its best arm."),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { id: "sweeps-table" },
        h("caption", { class: "visually-hidden" }, "Sweeps, newest first"),
        h("thead", {}, h("tr", {}, ["Name", "Status", "Arms", "Best arm", "Created"].map((name) => h("th", { scope: "col" }, name)))),
        tbody,
      ),
    ),
  );
  try {
    const page = await api("/v1/sweeps", { query: { limit: 100 } });
    if (!page.items.length) clear(tbody, h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No sweeps yet.")));
    else clear(tbody, page.items.map(sweepRow));
  } catch (error) {
    clear(tbody, h("tr", {}, h("td", { colspan: 5 }, errorBox(error))));
  }
  return null;
}

function sweepRow(sweep) {
  const done = sweep.arms.filter((arm) => FINAL.has(arm.status)).length;
  return h(
    "tr",
    { dataset: { sweepId: sweep.id } },
    h("td", {}, h("a", { href: `#/sweeps/${sweep.id}` }, sweep.name), h("div", { class: "muted small mono" }, sweep.id)),
    h("td", {}, statusBadge(sweep.status)),
    h("td", {}, `${done}/${sweep.arms.length} ended`),
    h("td", {}, sweep.best_arm ? h("code", {}, sweep.best_arm) : "—"),
    h("td", {}, timeCell(sweep.created_at)),
  );
}

// --- one sweep --------------------------------------------------------------------------------------------------

const COLUMNS = [
  { key: "arm", label: "Arm", text: true },
  { key: "status", label: "Status", text: true },
  { key: "metric", label: "Selection metric" },
  { key: "mean_recovery", label: "Mean recovery" },
  { key: "vision_drop", label: "Vision drop" },
  { key: "loss_last", label: "Final loss" },
];

export async function renderSweep(main, sweepId) {
  const title = h("h1", {}, "Sweep"); // kept across refreshes: it holds the focus after navigation
  const badge = h("span", { id: "sweep-status" });
  const head = h("div", { class: "page-head" }, title, badge);
  const summary = h("section", { class: "card", "aria-labelledby": "sweep-summary" });
  const arms = h("section", { class: "card", "aria-labelledby": "sweep-arms" });
  const chart = new LineChart({ id: "sweep-loss", title: "Training loss per arm", yLabel: "loss" });
  const curves = h(
    "section",
    { class: "card", "aria-labelledby": "sweep-curves" },
    h("h2", { id: "sweep-curves" }, "Curves"),
    chartControls(() => [chart]),
    h("div", { class: "charts" }, chart.element),
  );
  clear(main, head, summary, arms, curves);
  const sort = { key: "metric", descending: true };
  const series = new Map(); // job id -> MetricSeries, kept across refreshes so only new steps are read
  let timer = null;
  let alive = true;
  let latest = null;

  async function load() {
    let sweep, report;
    try {
      [sweep, report] = await Promise.all([api(`/v1/sweeps/${encodeURIComponent(sweepId)}`), api(`/v1/sweeps/${encodeURIComponent(sweepId)}/report`)]);
    } catch (error) {
      clear(summary, errorBox(error));
      return;
    }
    if (!alive) return;
    sort.descending = latest ? sort.descending : sweep.select.mode === "max";
    latest = { sweep, report };
    title.textContent = `Sweep ${sweep.name}`;
    clear(badge, statusBadge(sweep.status));
    clear(summary, ...summaryView(sweep));
    renderArms();
    await loadCurves(sweep);
    if (alive && sweep.status === "running") timer = setTimeout(load, REFRESH_MS);
  }

  function renderArms() {
    const { sweep, report } = latest;
    const rows = [...report.rows].sort(compareBy(sort));
    const header = COLUMNS.map((column) => {
      const active = sort.key === column.key;
      const button = h(
        "button",
        { type: "button", class: "sort", onclick: () => {
          sort.descending = active ? !sort.descending : !column.text;
          sort.key = column.key;
          renderArms();
          arms.querySelector(`th[data-column="${column.key}"] button`).focus(); // the table was redrawn
        } },
        column.key === "metric" ? `${column.label} (${sweep.select.metric}, ${sweep.select.mode})` : column.label,
      );
      return h("th", { scope: "col", "aria-sort": active ? (sort.descending ? "descending" : "ascending") : "none", dataset: { column: column.key } }, button);
    });
    clear(
      arms,
      h("h2", { id: "sweep-arms" }, "Arms"),
      h("p", { class: "hint" }, "Click a column to sort. Arms that failed are never chosen as the best arm."),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { id: "arms-table" },
          h("caption", { class: "visually-hidden" }, "The sweep's arms"),
          h("thead", {}, h("tr", {}, header, h("th", { scope: "col" }, "Job"))),
          h("tbody", {}, rows.map(armRow)),
        ),
      ),
    );
  }

  async function loadCurves(sweep) {
    const labels = new Map(sweep.arms.map((arm) => [arm.job_id, arm]));
    await Promise.all(
      sweep.arms.map((arm) => {
        if (!series.has(arm.job_id)) series.set(arm.job_id, new MetricSeries(api, arm.job_id, { maxPoints: 300, names: ["loss"] }));
        return series.get(arm.job_id).refresh().catch(() => null);
      }),
    );
    if (!alive) return;
    const lines = [...series.entries()].flatMap(([jobId, metrics], i) =>
      metrics.pick(["loss"]).map((one) => {
        const arm = labels.get(jobId);
        const label = `${arm.label}${jobId === sweep.best_job_id ? " (best)" : ""}`; // a new name redraws the legend
        return { ...one, name: label, label, colour: arm.is_control ? "#374151" : PALETTE[i % PALETTE.length], dash: arm.is_control ? [6, 3] : [] };
      }),
    );
    chart.update(lines);
  }

  await load();
  return () => {
    alive = false;
    clearTimeout(timer);
    chart.destroy();
  };
}

function summaryView(sweep) {
  const facts = [
    ["Selection", `${sweep.select.mode} of ${sweep.select.metric}`],
    ["Sampling", sweep.sampling.type === "random" ? `random: ${sweep.sampling.n_arms} arms, seed ${sweep.sampling.seed}` : "every combination of the grid"],
    ["Control", sweep.control ? "the base spec with kd_sources: none" : "none"],
    ["Best arm", sweep.best_arm ? h("code", { id: "best-arm" }, sweep.best_arm) : sweep.status === "running" ? "chosen when every arm has ended" : "none (no arm succeeded)"],
  ];
  if (sweep.passed !== null && sweep.passed !== undefined) facts.push(["Best arm's gates", h("strong", { class: sweep.passed ? "verdict pass" : "verdict fail" }, sweep.passed ? "✓ passed" : "✗ failed")]);
  const out = [
    h("h2", { id: "sweep-summary" }, "Summary"),
    h("dl", { class: "facts" }, facts.map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value)))),
  ];
  if (sweep.lift) out.push(liftView(sweep.lift));
  return out;
}

function liftView(lift) {
  if (lift.error) return h("p", { class: "alert warning", id: "sweep-lift" }, `No lift over the control: ${lift.error}`);
  const rows = (lift.mean_recovery ? [lift.mean_recovery] : []).concat(lift.suites);
  return h(
    "div",
    { class: "table-wrap lift-wrap" },
    h(
      "table",
      { id: "sweep-lift", class: "compact" },
      h("caption", {}, `Lift of the best arm over the control (${Math.round((lift.confidence ?? 0.95) * 100)}% interval)`),
      h("thead", {}, h("tr", {}, ["", "Lift", "Interval"].map((name) => h("th", { scope: "col" }, name)))),
      h(
        "tbody",
        {},
        rows.map((row) =>
          h(
            "tr",
            {},
            h("th", { scope: "row" }, row.name === "mean_recovery" ? "Mean recovery" : row.name),
            h("td", {}, pointsChange(row.estimate)),
            h("td", {}, row.low === null ? `n/a${row.note ? ` (${row.note})` : ""}` : `[${pointsChange(row.low)}, ${pointsChange(row.high)}]`),
          ),
        ),
      ),
    ),
  );
}

function armRow(row) {
  const tags = [row.best ? h("span", { class: "tag tag-best" }, "best") : null, row.control ? h("span", { class: "tag tag-control" }, "control") : null];
  return h(
    "tr",
    { class: [row.best ? "arm-best" : "", row.control ? "arm-control" : ""].join(" ").trim(), dataset: { jobId: row.job_id, arm: row.arm } },
    h("th", { scope: "row" }, h("code", {}, row.arm), " ", tags),
    h("td", {}, statusBadge(row.status)),
    h("td", { class: "num" }, number(row.metric)),
    h("td", { class: "num" }, percent(row.mean_recovery)),
    h("td", { class: "num" }, pointsChange(row.vision_drop)),
    h("td", { class: "num" }, number(row.loss_last)),
    h("td", {}, h("a", { href: `#/jobs/${row.job_id}`, class: "mono small" }, row.job_id)),
  );
}

/** Rows by one column; a missing value sorts last whatever the direction. */
function compareBy({ key, descending }) {
  return (a, b) => {
    const [x, y] = [a[key], b[key]];
    if (x === null || x === undefined) return y === null || y === undefined ? 0 : 1;
    if (y === null || y === undefined) return -1;
    const order = typeof x === "number" ? x - y : String(x).localeCompare(String(y));
    return descending ? -order : order;
  };
}
