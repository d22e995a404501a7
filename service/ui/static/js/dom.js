// A tiny element builder and the formatting every page shares.

/**
 * h("a", {href: "#/jobs", class: "x", onclick: fn}, "text", child) -> HTMLElement.
 * Attribute values of false/null/undefined are left out; children may be strings, nodes, arrays or null.
 */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name === "value" && "value" in element) element.value = value;
    else if (name === "checked" || name === "selected" || name === "disabled") element[name] = Boolean(value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** Polite screen-reader announcement (the page's one aria-live region for transient messages). */
export function announce(message) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  setTimeout(() => {
    region.textContent = message;
  }, 50);
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, "data-status": status }, status);
}

export function number(value, digits = 4) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (typeof value !== "number") return String(value);
  if (value !== 0 && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e6)) return value.toExponential(2);
  return Number(value.toPrecision(digits)).toString();
}

// One number format for scores everywhere (the jobs table, the job page, the comparison): scores, recoveries and
// gate values are percents with one decimal (0.7826 -> 78.3%); a difference of two scores is in percentage points.

export function percent(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return `${(value * 100).toFixed(digits)}%`;
}

/** A change of a score, signed, in percentage points: +0.5625 -> "+56.3 pp". */
export function pointsChange(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  const text = `${Math.abs(value * 100).toFixed(1)} pp`;
  if (text === "0.0 pp") return text;
  return `${value > 0 ? "+" : "−"}${text}`;
}

/** A size of a score difference (a drop, a tolerance), unsigned, in percentage points: 0.05 -> "5.0 pp". */
export function points(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return `${(value * 100).toFixed(1)} pp`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  const hours = Math.floor(s / 3600);
  if (hours < 48) return `${hours} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

const RELATIVE = new Intl.RelativeTimeFormat("en", { numeric: "auto" });

export function timeAgo(iso) {
  if (!iso) return "—";
  const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
  const steps = [
    [60, "second"],
    [3600, "minute"],
    [86400, "hour"],
    [Infinity, "day"],
  ];
  let divisor = 1;
  for (const [limit, unit] of steps) {
    if (Math.abs(seconds) < limit) return RELATIVE.format(Math.round(seconds / divisor), unit);
    divisor = limit;
  }
  return iso;
}

export function timeCell(iso) {
  if (!iso) return "—";
  return h("time", { datetime: iso, title: new Date(iso).toLocaleString() }, timeAgo(iso));
}

export function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "—";
}

/** The hash route's query: #/jobs?status=running&after=... -> URLSearchParams. */
export function routeQuery() {
  const hash = location.hash.slice(1);
  const index = hash.indexOf("?");
  return new URLSearchParams(index >= 0 ? hash.slice(index + 1) : "");
}

export function navigate(path, params) {
  const query = params ? new URLSearchParams(params).toString() : "";
  location.hash = query ? `${path}?${query}` : path;
}

/** A labelled form control: <div class="field"><label/><control/><p hint/><p error/></div>. */
export function field(id, label, control, { hint, loc } = {}) {
  control.id = id;
  const describedBy = [];
  const hintNode = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintNode) describedBy.push(hintNode.id);
  const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
  describedBy.push(error.id);
  control.setAttribute("aria-describedby", describedBy.join(" "));
  if (loc) control.dataset.loc = loc;
  const isCheck = control.type === "checkbox";
  const labelNode = h("label", { for: id }, label);
  return h(
    "div",
    { class: isCheck ? "field check" : "field", dataset: loc ? { fieldLoc: loc } : undefined },
    isCheck ? [control, labelNode] : [labelNode, control],
    hintNode,
    error,
  );
}

export function errorBox(error) {
  const box = h("div", { class: "alert error", role: "alert" }, h("strong", {}, error.title || "Error"));
  if (error.message && error.message !== error.title) box.append(h("p", {}, error.message));
  return box;
}
