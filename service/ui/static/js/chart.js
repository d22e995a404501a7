// Line charts of metric series, drawn by uPlot (vendored in static/vendor/uplot, loaded as window.uPlot).
// What W&B users expect: values under the cursor in the legend (the same step on every chart), drag to zoom (double-click or "Reset zoom" to
// undo), EMA smoothing over a faint raw line, a log y axis, and live appends that keep the zoom.

import { saveBlob } from "./api.js";
import { h, number } from "./dom.js";

// Colour-blind-safe, each at least 4.5:1 on white; dashes tell lines apart without colour too.
export const PALETTE = ["#1d4ed8", "#b45309", "#047857", "#7e22ce", "#be123c", "#0e7490", "#4d7c0f", "#374151"];
const DASHES = [[], [6, 3], [2, 3], [8, 3, 2, 3], [1, 2], [10, 4], [4, 4], [3, 6]];
const HEIGHT = 280;
const STEP_INCREMENTS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7].map((p) => m * p)).sort((a, b) => a - b); // whole steps
const SETTINGS_KEY = "lingudistill.chartSettings";

/** Shared by every chart, like a W&B workspace's line-plot settings, and kept across visits. */
export const chartSettings = { smoothing: 0, log: false, ...readSettings() };

function readSettings() {
  try {
    return JSON.parse(localStorage.getItem(SETTINGS_KEY)) || {};
  } catch {
    return {};
  }
}

function saveSettings() {
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(chartSettings));
}

/** Debiased exponential moving average over the points (TensorBoard's and W&B's "smoothing"); nulls stay gaps. */
export function smooth(values, weight) {
  if (!(weight > 0)) return values;
  let last = 0;
  let count = 0;
  return values.map((value) => {
    if (value === null || value === undefined) return null;
    last = last * weight + (1 - weight) * value;
    count += 1;
    return last / (1 - weight ** count);
  });
}

/**
 * One chart: `new LineChart({id, title, yLabel})`, put `.element` in the page, then `update(series)` with
 * [{name, label?, colour?, dash?, points: [{step, value}]}] as often as the data grows; `destroy()` on leaving.
 */
export class LineChart {
  constructor({ id, title, yLabel = "", emptyText = "No data yet." }) {
    this.id = id;
    this.title = title;
    this.yLabel = yLabel;
    this.series = [];
    this.plot = null;
    this.zoom = null; // {min, max} of the x scale while the user has zoomed in
    this.empty = h("p", { class: "muted chart-empty" }, emptyText);
    this.canvas = h("div", { class: "chart-canvas" });
    this.resetButton = h("button", { type: "button", class: "button secondary small", hidden: true, onclick: () => this.resetZoom() }, "Reset zoom");
    this.csvButton = h("button", { type: "button", class: "button secondary small", hidden: true, "aria-label": `${title}: download CSV`, onclick: () => this.saveCsv() }, "CSV");
    this.summary = h("p", { class: "visually-hidden", id: `${id}-summary` });
    this.table = h("div", { class: "chart-data-box" });
    this.element = h(
      "figure",
      { class: "chart", id, "data-chart": title, "aria-labelledby": `${id}-caption`, "aria-describedby": `${id}-summary` },
      h("figcaption", { id: `${id}-caption` }, h("span", {}, title), h("span", { class: "chart-actions" }, this.resetButton, this.csvButton)),
      this.empty,
      this.canvas,
      this.summary,
      this.table,
    );
    this.resizer = new ResizeObserver(() => this.fit());
    this.resizer.observe(this.canvas);
  }

  update(series) {
    const present = series.filter((one) => one.points.length > 0);
    const sameLines = present.map((one) => one.name).join() === this.series.map((one) => one.name).join();
    this.series = present;
    this.empty.hidden = present.length > 0;
    this.csvButton.hidden = present.length === 0;
    this.describe();
    if (!present.length) return this.dropPlot();
    if (this.plot && sameLines) return this.append();
    return this.build();
  }

  /** Smoothing or the scale changed: the lines change, the zoom stays. */
  redraw() {
    if (this.series.length) this.build();
  }

  resetZoom() {
    const steps = this.plot.data[0];
    this.plot.setScale("x", { min: steps[0], max: steps[steps.length - 1] });
  }

  /** Every point of every line, one row per step (the raw values, as the API returned them). */
  saveCsv() {
    const steps = [...new Set(this.series.flatMap((one) => one.points.map((p) => p.step)))].sort((a, b) => a - b);
    const lookup = this.series.map((one) => new Map(one.points.map((p) => [p.step, p.value])));
    const header = ["step", ...this.series.map((one) => csvCell(one.label || one.name))].join(",");
    const rows = steps.map((step) => [step, ...lookup.map((values) => values.get(step) ?? "")].join(","));
    saveBlob(new Blob([[header, ...rows].join("\n") + "\n"], { type: "text/csv" }), `${this.id}.csv`);
  }

  destroy() {
    this.resizer.disconnect();
    this.dropPlot();
  }

  // --- drawing -------------------------------------------------------------------------------------------------

  build() {
    this.dropPlot();
    const lines = this.lines();
    this.plot = new window.uPlot(this.options(lines), this.data(lines), this.canvas);
    this.element.dataset.scale = chartSettings.log && this.hasPositiveValues() ? "log" : "linear";
    this.markLegend(lines);
    if (this.zoom) this.plot.setScale("x", this.zoom);
    showLatestWhenIdle(this.plot);
  }

  append() {
    const lines = this.lines();
    this.plot.setData(this.data(lines), !this.zoom); // new steps extend the view unless the user has zoomed in
    if (this.zoom) this.plot.setScale("x", this.zoom);
    this.markLegend(lines);
    showLatestWhenIdle(this.plot);
  }

  dropPlot() {
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }

  fit() {
    if (this.plot) this.plot.setSize({ width: this.width(), height: HEIGHT });
  }

  width() {
    return Math.max(this.canvas.clientWidth || 0, 280);
  }

  /** The drawn lines: each metric, and under it its faint raw values when it is smoothed. */
  lines() {
    const smoothed = chartSettings.smoothing > 0;
    const mains = this.series.map((one, index) => ({ ...one, index, raw: false }));
    return smoothed ? [...mains.map((one) => ({ ...one, raw: true })), ...mains] : mains;
  }

  data(lines) {
    const log = chartSettings.log && this.hasPositiveValues();
    const tables = this.series.map((one) => [one.points.map((p) => p.step), one.points.map((p) => plottable(p.value, log))]);
    const [steps, ...columns] = window.uPlot.join(tables); // one step axis; a series without a step has a gap
    const drawn = (line) => (line.raw ? columns[line.index] : smooth(columns[line.index], chartSettings.smoothing)); // names may repeat (A and B)
    return [steps, ...lines.map(drawn)];
  }

  hasPositiveValues() {
    return this.series.some((one) => one.points.some((p) => p.value > 0));
  }

  options(lines) {
    const log = chartSettings.log && this.hasPositiveValues();
    return {
      width: this.width(),
      height: HEIGHT,
      scales: { x: { time: false }, y: log ? { distr: 3, log: 10 } : { auto: true } },
      axes: [
        { label: "step", incrs: STEP_INCREMENTS, values: (u, splits) => splits.map((v) => number(v, 6)), stroke: "#374151", grid: { stroke: "#e5e7eb" } },
        { label: this.yLabel, size: 64, values: (u, splits) => tickLabels(splits), stroke: "#374151", grid: { stroke: "#e5e7eb" } },
      ],
      series: [{ label: "step", value: (u, v) => (v === null || v === undefined ? "—" : String(v)) }, ...lines.map(lineOptions)],
      cursor: { drag: { x: true, y: false, setScale: true }, focus: { prox: 24 }, sync: { key: "steps", setSeries: false } }, // one hovered step on every chart
      focus: { alpha: 0.35 },
      legend: { live: true },
      hooks: {
        setScale: [(u, key) => key === "x" && this.noteZoom(u)],
        setLegend: [(u) => showLatestWhenIdle(u)],
        setSeries: [(u, i, opts) => opts.show !== undefined && this.followToggle(lines, i, opts.show)],
      },
    };
  }

  noteZoom(u) {
    const steps = u.data[0];
    const { min, max } = u.scales.x;
    const zoomed = steps.length > 1 && (min > steps[0] || max < steps[steps.length - 1]);
    this.zoom = zoomed ? { min, max } : null;
    this.resetButton.hidden = !zoomed;
    this.element.dataset.zoomed = zoomed ? "true" : "false";
  }

  /** A line hidden or shown from the legend takes its faint raw companion with it. */
  followToggle(lines, seriesIndex, show) {
    const line = lines[seriesIndex - 1];
    const row = this.plot.root.querySelectorAll(".u-legend .u-series")[seriesIndex];
    if (!line || line.raw) return;
    if (row) row.setAttribute("aria-pressed", String(show));
    const companion = lines.findIndex((other) => other.raw && other.index === line.index);
    if (companion >= 0 && this.plot.series[companion + 1].show !== show) this.plot.setSeries(companion + 1, { show });
  }

  /** Legend rows name their series and its number of points, and toggle it by keyboard as by a click. */
  markLegend(lines) {
    const rows = this.plot.root.querySelectorAll(".u-legend .u-series");
    lines.forEach((line, i) => {
      const row = rows[i + 1];
      if (!row || line.raw) return;
      row.dataset.points = String(line.points.length);
      if (row.dataset.series) return; // set up once per drawn chart; live appends only change the count
      row.dataset.series = line.name;
      Object.assign(row, { tabIndex: 0, title: "Show or hide this line" });
      row.setAttribute("role", "button");
      row.setAttribute("aria-pressed", "true");
      row.addEventListener("keydown", (event) => toggleOnKey(event, row));
    });
  }

  /** A text alternative: the latest value of every line, and the data as a table. */
  describe() {
    this.summary.textContent = this.series.length
      ? `Latest values: ${this.series.map((one) => `${one.label || one.name} ${number(one.points[one.points.length - 1].value)} at step ${one.points[one.points.length - 1].step}`).join("; ")}.`
      : "";
    const wasOpen = Boolean(this.table.querySelector("details")?.open); // a live update keeps an opened table open
    this.table.replaceChildren(...(this.series.length ? [dataTable(this.title, this.series, wasOpen)] : []));
  }
}

/** Away from the cursor, the legend shows each line's latest value (uPlot would show blanks). */
function showLatestWhenIdle(u) {
  if (u.legend.idx !== null && u.legend.idx !== undefined) return;
  const cells = u.root.querySelectorAll(".u-legend .u-series .u-value");
  u.series.forEach((series, i) => {
    const values = u.data[i];
    let last = values.length - 1;
    while (last >= 0 && (values[last] === null || values[last] === undefined)) last -= 1;
    if (cells[i] && last >= 0) cells[i].textContent = series.value(u, values[last], i, last);
  });
}

function lineOptions(line) {
  const colour = line.colour || PALETTE[line.index % PALETTE.length];
  return {
    label: line.label || line.name,
    class: line.raw ? "raw-line" : "main-line",
    stroke: line.raw ? `${colour}40` : colour,
    width: line.raw ? 1 : 2,
    dash: line.raw ? [] : (line.dash ?? DASHES[line.index % DASHES.length]),
    spanGaps: true,
    points: { show: (u, i) => u.data[0].length === 1 },
    value: (u, v) => number(v),
  };
}

function toggleOnKey(event, row) {
  if (event.key !== "Enter" && event.key !== " ") return;
  event.preventDefault();
  row.querySelector(".u-label")?.click();
}

function csvCell(text) {
  return /[",\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function plottable(value, log) {
  if (value === null || value === undefined || !Number.isFinite(value)) return null;
  return log && value <= 0 ? null : value;
}

/** One style per axis: all in exponent form when any tick needs it (1.0e-3 beside 8.0e-4, not 0.001). */
function tickLabels(splits) {
  const tiny = (v) => v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e6);
  const exponent = splits.some((v) => v !== null && v !== undefined && tiny(v));
  return splits.map((v) => (v === null || v === undefined ? "" : exponent ? v.toExponential(1) : number(v, 3)));
}

/**
 * The controls every chart on the page shares: an EMA smoothing slider and a log-scale toggle.
 * `charts()` returns the charts to redraw when they change.
 */
export function chartControls(charts) {
  const slider = h("input", { type: "range", id: "chart-smoothing", min: 0, max: 0.99, step: 0.01, value: chartSettings.smoothing });
  const shown = h("output", { for: "chart-smoothing", id: "chart-smoothing-value" }, chartSettings.smoothing.toFixed(2));
  const log = h("input", { type: "checkbox", id: "chart-log", checked: chartSettings.log });
  const redrawAll = () => {
    saveSettings();
    for (const chart of charts()) chart.redraw();
  };
  slider.addEventListener("input", () => {
    chartSettings.smoothing = Number(slider.value);
    shown.textContent = chartSettings.smoothing.toFixed(2);
    redrawAll();
  });
  log.addEventListener("change", () => {
    chartSettings.log = log.checked;
    redrawAll();
  });
  return h(
    "div",
    { class: "chart-controls", role: "group", "aria-label": "Chart settings" },
    h("label", { for: "chart-smoothing" }, "Smoothing (EMA)"),
    slider,
    shown,
    h("label", { class: "check-inline" }, log, " Log scale (y)"),
    h("span", { class: "hint" }, "Hover for values · drag across a chart to zoom · double-click to reset"),
  );
}

function dataTable(title, series, open) {
  const steps = [...new Set(series.flatMap((one) => one.points.map((p) => p.step)))].sort((a, b) => a - b);
  const shown = steps.length > 60 ? steps.filter((_, i) => i % Math.ceil(steps.length / 60) === 0) : steps;
  const lookup = series.map((one) => new Map(one.points.map((p) => [p.step, p.value])));
  return h(
    "details",
    { class: "chart-data", open },
    h("summary", {}, `${title}: data table`),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "compact" },
        h("caption", { class: "visually-hidden" }, `${title} by step`),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "step"), series.map((one) => h("th", { scope: "col" }, one.label || one.name)))),
        h("tbody", {}, shown.map((step) => h("tr", {}, h("th", { scope: "row" }, step), lookup.map((m) => h("td", {}, number(m.get(step))))))),
      ),
    ),
  );
}
