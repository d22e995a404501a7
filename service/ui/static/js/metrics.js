// Hand-made SVG line charts for downsampled metric series, and the client side of downsampling.

import { h, number } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 640;
const HEIGHT = 240;
const MARGIN = { left: 68, right: 16, top: 14, bottom: 38 };
// Colour-blind-safe, each at least 4.5:1 on white; dashes tell lines apart without colour too.
export const PALETTE = ["#1d4ed8", "#b45309", "#047857", "#7e22ce", "#be123c", "#0e7490", "#4d7c0f", "#374151"];
const DASHES = ["", "6 3", "2 3", "8 3 2 3", "1 2", "10 4", "4 4", "3 6"];

function s(tag, attrs = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) element.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) element.append(child);
  }
  return element;
}

function niceStep(span, count) {
  const raw = span / Math.max(count, 1);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const residual = raw / magnitude;
  return (residual > 5 ? 10 : residual > 2 ? 5 : residual > 1 ? 2 : 1) * magnitude;
}

function ticks(low, high, count) {
  if (!(high > low)) return [low];
  const step = niceStep(high - low, count);
  const out = [];
  for (let value = Math.ceil(low / step) * step; value <= high + step * 1e-9; value += step) out.push(value);
  return out;
}

function tickLabel(value) {
  if (value !== 0 && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e6)) return value.toExponential(1);
  return number(value, 3);
}

function extent(values) {
  let low = Infinity;
  let high = -Infinity;
  for (const value of values) {
    if (value < low) low = value;
    if (value > high) high = value;
  }
  return [low, high];
}

/**
 * lineChart({title, series: [{name, label?, points: [{step, value}]}], yLabel, id}) -> <figure>.
 * An <svg role="img"> with a text alternative, a legend with the latest values, and the data as a table.
 */
export function lineChart({ title, series, yLabel = "", id, emptyText = "No data yet." }) {
  const present = series.filter((one) => one.points.length > 0);
  const figure = h("figure", { class: "chart", id, "data-chart": title });
  const captionId = `${id}-caption`;
  figure.append(h("figcaption", { id: captionId }, title));
  if (present.length === 0) {
    figure.append(h("p", { class: "muted chart-empty" }, emptyText));
    return figure;
  }
  const all = present.flatMap((one) => one.points);
  let [xLow, xHigh] = extent(all.map((p) => p.step));
  let [yLow, yHigh] = extent(all.map((p) => p.value));
  if (xLow === xHigh) [xLow, xHigh] = [xLow - 1, xHigh + 1];
  if (yLow === yHigh) [yLow, yHigh] = [yLow - Math.abs(yLow || 1) * 0.1, yHigh + Math.abs(yHigh || 1) * 0.1];
  const pad = (yHigh - yLow) * 0.05;
  yLow = yLow >= 0 && yLow - pad < 0 ? 0 : yLow - pad;
  yHigh += pad;
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const px = (x) => MARGIN.left + ((x - xLow) / (xHigh - xLow)) * plotW;
  const py = (y) => MARGIN.top + (1 - (y - yLow) / (yHigh - yLow)) * plotH;

  const summary = present
    .map((one) => {
      const last = one.points[one.points.length - 1];
      return `${one.label || one.name}: ${number(last.value)} at step ${last.step}`;
    })
    .join("; ");
  const svg = s("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img",
    "aria-labelledby": `${id}-title ${id}-desc`,
    preserveAspectRatio: "xMidYMid meet",
  });
  svg.append(s("title", { id: `${id}-title` }, title), s("desc", { id: `${id}-desc` }, `Latest values: ${summary}.`));

  const grid = s("g", { class: "grid" });
  for (const value of ticks(yLow, yHigh, 5)) {
    const y = py(value);
    grid.append(
      s("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y, y2: y }),
      s("text", { x: MARGIN.left - 6, y: y + 4, "text-anchor": "end", class: "tick" }, tickLabel(value)),
    );
  }
  for (const value of ticks(xLow, xHigh, 6).filter((v) => Number.isInteger(v))) {
    const x = px(value);
    grid.append(
      s("line", { x1: x, x2: x, y1: MARGIN.top + plotH, y2: MARGIN.top + plotH + 4, class: "tick-mark" }),
      s("text", { x, y: HEIGHT - MARGIN.bottom + 18, "text-anchor": "middle", class: "tick" }, number(value, 6)),
    );
  }
  grid.append(
    s("rect", { x: MARGIN.left, y: MARGIN.top, width: plotW, height: plotH, class: "frame" }),
    s("text", { x: MARGIN.left + plotW / 2, y: HEIGHT - 4, "text-anchor": "middle", class: "axis" }, "step"),
    s(
      "text",
      {
        x: 12,
        y: MARGIN.top + plotH / 2,
        "text-anchor": "middle",
        class: "axis",
        transform: `rotate(-90 12 ${MARGIN.top + plotH / 2})`,
      },
      yLabel,
    ),
  );
  svg.append(grid);

  present.forEach((one, index) => {
    const colour = one.colour || PALETTE[index % PALETTE.length];
    const d = one.points.map((p, i) => `${i ? "L" : "M"}${px(p.step).toFixed(1)},${py(p.value).toFixed(1)}`).join("");
    svg.append(
      s("path", {
        d,
        fill: "none",
        stroke: colour,
        "stroke-width": 2,
        "stroke-dasharray": one.dash ?? DASHES[index % DASHES.length] ?? null,
        "stroke-linejoin": "round",
        class: "series",
        "data-series": one.name,
      }),
    );
    if (one.points.length === 1) {
      const p = one.points[0];
      svg.append(s("circle", { cx: px(p.step), cy: py(p.value), r: 3, fill: colour }));
    }
  });
  figure.append(h("div", { class: "chart-canvas" }, svg));

  const legend = h("ul", { class: "legend", "aria-label": `${title} legend` });
  present.forEach((one, index) => {
    const colour = one.colour || PALETTE[index % PALETTE.length];
    const last = one.points[one.points.length - 1];
    const swatch = s("svg", { width: 28, height: 10, "aria-hidden": "true" });
    swatch.append(
      s("line", {
        x1: 1,
        x2: 27,
        y1: 5,
        y2: 5,
        stroke: colour,
        "stroke-width": 3,
        "stroke-dasharray": one.dash ?? DASHES[index % DASHES.length] ?? null,
      }),
    );
    legend.append(h("li", {}, swatch, h("span", {}, one.label || one.name), h("span", { class: "muted" }, number(last.value))));
  });
  figure.append(legend);
  figure.append(dataTable(title, present));
  return figure;
}

function dataTable(title, series) {
  const steps = [...new Set(series.flatMap((one) => one.points.map((p) => p.step)))].sort((a, b) => a - b);
  const shown = steps.length > 60 ? steps.filter((_, i) => i % Math.ceil(steps.length / 60) === 0) : steps;
  const lookup = series.map((one) => new Map(one.points.map((p) => [p.step, p.value])));
  return h(
    "details",
    { class: "chart-data" },
    h("summary", {}, `${title}: data table`),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "compact" },
        h("caption", { class: "visually-hidden" }, `${title} by step`),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "step"), series.map((one) => h("th", { scope: "col" }, one.label || one.name)))),
        h(
          "tbody",
          {},
          shown.map((step) => h("tr", {}, h("th", { scope: "row" }, step), lookup.map((m) => h("td", {}, number(m.get(step)))))),
        ),
      ),
    ),
  );
}

/** Halve a series by merging neighbours: the mean value at the later step (the server's bucket rule). */
export function halve(points) {
  const out = [];
  for (let i = 0; i < points.length; i += 2) {
    const pair = points.slice(i, i + 2);
    out.push({ step: pair[pair.length - 1].step, value: pair.reduce((sum, p) => sum + p.value, 0) / pair.length });
  }
  return out;
}

/**
 * Live metric series of one job: one downsampled load, then only the steps after the last one seen
 * (so a 100k-step run never re-reads its history), merged down whenever a series passes 2 x maxPoints.
 */
export class MetricSeries {
  constructor(api, jobId, { maxPoints = 400, names = null } = {}) {
    this.api = api;
    this.jobId = jobId;
    this.maxPoints = maxPoints;
    this.names = names; // only the charted series: a 100k-step run has ~15 metrics per step
    this.series = new Map();
    this.lastStep = null;
  }

  async refresh() {
    const query = { max_points: this.maxPoints, names: this.names };
    if (this.lastStep !== null) query.step_min = this.lastStep + 1;
    const body = await this.api(`/v1/jobs/${encodeURIComponent(this.jobId)}/metrics`, { query });
    let grew = false;
    for (const one of body.series) {
      if (one.points.length === 0) continue;
      let points = (this.series.get(one.name) || []).concat(one.points);
      while (points.length > 2 * this.maxPoints) points = halve(points);
      this.series.set(one.name, points);
      const last = one.points[one.points.length - 1].step;
      if (this.lastStep === null || last > this.lastStep) this.lastStep = last;
      grew = true;
    }
    return grew;
  }

  reset() {
    this.series.clear();
    this.lastStep = null;
  }

  pick(names) {
    return names.filter((name) => this.series.has(name)).map((name) => ({ name, points: this.series.get(name) }));
  }

  matching(prefixes) {
    const names = [...this.series.keys()].filter((name) => prefixes.some((prefix) => name.startsWith(prefix))).sort();
    return this.pick(names);
  }
}
