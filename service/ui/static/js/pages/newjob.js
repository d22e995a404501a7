// New job: a form built from the JobSpec schema in /openapi.json (so its defaults are the spec's own), with
// the API's problem+json errors shown beside the field that `errors[].loc` names.

import { api, ApiError } from "../api.js";
import { announce, clear, errorBox, field, h, routeQuery } from "../dom.js";

const SCHEMA_SECTIONS = [
  ["method", "Method"],
  ["training", "Training"],
];

let schemaCache = null;

async function specSchema() {
  if (!schemaCache) {
    const response = await fetch("/openapi.json");
    const openapi = await response.json();
    const schemas = openapi.components.schemas;
    const resolve = (node) => (node && node.$ref ? schemas[node.$ref.split("/").pop()] : node);
    schemaCache = { schemas, resolve, root: schemas.JobSpec || schemas["JobSpec-Input"] };
  }
  return schemaCache;
}

export async function renderNewJob(main) {
  const [{ resolve, root }, uploaded] = await Promise.all([specSchema(), readyDatasets()]);
  const datasets = uploaded.filter((d) => (d.kind || "training") === "training");
  const suiteDatasets = uploaded.filter((d) => d.kind === "evaluation");
  const from = routeQuery().get("from");
  let base = null;
  if (from) {
    try {
      base = (await api(`/v1/jobs/${encodeURIComponent(from)}`)).spec;
    } catch {
      base = null;
    }
  }
  const idempotencyKey = crypto.randomUUID(); // a double click submits one job
  const summary = h("div", { id: "form-errors", tabindex: "-1" });
  const mixture = h("div", { class: "rows", id: "mixture-rows" });
  const language = h("div", { class: "rows", id: "language-rows" });
  const vision = h("div", { class: "rows", id: "vision-rows" });
  let rowCount = 0;

  function text(loc, label, value, hint, attrs = {}) {
    const id = `f-${loc.replaceAll(".", "-")}`;
    return field(id, label, h("input", { type: "text", value: value ?? "", autocomplete: "off", ...attrs }), { hint, loc });
  }

  function mixtureRow(source = {}) {
    const n = rowCount++;
    const known = datasets.find((d) => d.uri === source.uri);
    const select = h(
      "select",
      { class: "source-pick" },
      h("option", { value: "" }, "— other URI —"),
      datasets.map((d) => h("option", { value: d.uri, selected: known && known.uri === d.uri }, `${d.name} (${d.record_count} records)`)),
    );
    const uri = h("input", { type: "text", value: source.uri || "", placeholder: "dataset://…, s3://…, hf://…, /path" });
    select.addEventListener("change", () => {
      if (select.value) {
        uri.value = select.value;
        const name = row.querySelector("[data-part=name] input");
        if (!name.value) name.value = datasets.find((d) => d.uri === select.value).name.replace(/\.[a-z]+$/, "").replace(/[^A-Za-z0-9._-]/g, "-");
      }
    });
    const row = h(
      "fieldset",
      { class: "row-set", dataset: { row: "mixture" } },
      h("legend", {}, `Source ${n + 1}`),
      h("p", { class: "field-error", hidden: true }),
      h(
        "div",
        { class: "grid-4" },
        withPart(field(`f-mix-${n}-pick`, "Uploaded dataset", select), "pick"),
        withPart(field(`f-mix-${n}-uri`, "URI", uri), "uri"),
        withPart(text(`mix.${n}.name`, "Name", source.name || "", null), "name"),
        withPart(text(`mix.${n}.weight`, "Weight", source.weight ?? 1.0, null, { inputmode: "decimal" }), "weight"),
      ),
      withPart(field(`f-mix-${n}-distill`, "Distill (language-intensive source: apply KD here)", h("input", { type: "checkbox", checked: source.distill ?? false })), "distill"),
      h("button", { type: "button", class: "button secondary small", onclick: () => { row.remove(); relabel(); } }, `Remove source ${n + 1}`),
    );
    mixture.append(row);
    relabel();
  }

  function suitePick(n) {
    const select = h(
      "select",
      {},
      h("option", { value: "" }, "— other URI —"),
      suiteDatasets.map((d) => h("option", { value: d.uri }, `${d.name} (${d.record_count} items)`)),
    );
    select.addEventListener("change", () => {
      const row = select.closest("fieldset");
      if (!select.value) return;
      row.querySelector("[data-part=uri] input").value = select.value;
      const name = row.querySelector("[data-part=name] input");
      if (!name.value) name.value = suiteDatasets.find((d) => d.uri === select.value).name.replace(/\.[a-z]+$/, "").replace(/[^A-Za-z0-9._-]/g, "-");
    });
    return select;
  }

  function suiteRow(container, kind, suite = {}) {
    const n = rowCount++;
    const row = h(
      "fieldset",
      { class: "row-set", dataset: { row: kind } },
      h("legend", {}, `${kind === "language" ? "Language" : "Vision"} suite`),
      h("p", { class: "field-error", hidden: true }),
      h(
        "div",
        { class: "grid-3" },
        withPart(field(`f-suite-${n}-pick`, "Uploaded suite", suitePick(n)), "pick"),
        withPart(text(`${kind}.${n}.uri`, "URI (JSONL)", suite.uri || "", null), "uri"),
        withPart(text(`${kind}.${n}.name`, "Name", suite.name || "", null), "name"),
      ),
      h("button", { type: "button", class: "button secondary small", onclick: () => { row.remove(); relabel(); } }, "Remove suite"),
    );
    container.append(row);
    relabel();
  }

  // data-loc follows the row order, so an error at ['body', 'mixture', 1, 'uri'] lands on the second row.
  function relabel() {
    for (const [container, key] of [[mixture, "mixture"], [language, "evaluation.language"], [vision, "evaluation.vision"]]) {
      [...container.children].forEach((row, index) => {
        row.dataset.fieldLoc = `${key}.${index}`;
        if (key === "mixture") row.querySelector("legend").textContent = `Source ${index + 1}`;
        for (const part of row.querySelectorAll("[data-part]")) {
          const control = part.querySelector("input, select");
          control.dataset.loc = `${key}.${index}.${part.dataset.part}`;
          part.dataset.fieldLoc = control.dataset.loc;
        }
      });
    }
  }

  const initial = base || {};
  const form = h(
    "form",
    { class: "job-form", novalidate: true, "aria-labelledby": "new-title" },
    h("div", { class: "page-head" }, h("h1", { id: "new-title" }, base ? `New job from ${base.name}` : "New job")),
    summary,
    section(
      "Models",
      text("name", "Job name", base ? `${base.name}-2` : "", "Letters, digits, '.', '_' or '-'."),
      text("student", "Student (the adapted VLM)", initial.student, "s3://…, hf://org/name@revision, file:// or an absolute path."),
      text("teacher", "Teacher (the original language model)", initial.teacher, "The LM the student's decoder came from."),
    ),
    h(
      "fieldset",
      { class: "card", dataset: { fieldLoc: "mixture" } },
      h("legend", {}, "Training data"),
      h("p", { class: "hint" }, "Choose uploaded datasets (", h("a", { href: "#/datasets" }, "upload one"), ") or name any URI."),
      h("p", { class: "field-error", hidden: true, id: "f-mixture-error" }),
      mixture,
      h("button", { type: "button", class: "button secondary", onclick: () => mixtureRow() }, "Add a source"),
    ),
    SCHEMA_SECTIONS.map(([key, title]) => schemaSection(key, title, resolve(root.properties[key]), resolve, initial[key] || {})),
    h(
      "fieldset",
      { class: "card", dataset: { fieldLoc: "evaluation" } },
      h("legend", {}, "Evaluation"),
      h("p", { class: "field-error", hidden: true, id: "f-evaluation-error" }),
      h("h3", {}, "Language suites"),
      language,
      h("button", { type: "button", class: "button secondary small", onclick: () => suiteRow(language, "language") }, "Add a language suite"),
      h("h3", {}, "Vision suites"),
      vision,
      h("button", { type: "button", class: "button secondary small", onclick: () => suiteRow(vision, "vision") }, "Add a vision suite"),
      h(
        "div",
        { class: "grid-2" },
        text("evaluation.gates.min_recovery", "Gate: minimum mean recovery", initial.evaluation?.gates?.min_recovery ?? "", "Empty: no gate.", { inputmode: "decimal" }),
        text("evaluation.gates.max_vision_drop", "Gate: maximum vision drop", initial.evaluation?.gates?.max_vision_drop ?? "", "Empty: no gate.", { inputmode: "decimal" }),
      ),
      field("f-evaluation-control", "Control arm: also run this job without distillation and report the lift over it", h("input", { type: "checkbox", checked: Boolean(initial.evaluation?.control) }), {
        hint: "A second job with kd_sources none, the same seed, data order, steps and suites. Needs a language suite.",
        loc: "evaluation.control",
      }),
      text("evaluation.gates.min_lift", "Gate: minimum lift over the control", initial.evaluation?.gates?.min_lift ?? "", "Lower bound of the 95% interval of the mean-recovery lift. Empty: no gate.", { inputmode: "decimal" }),
    ),
    section(
      "Resources and labels",
      h(
        "div",
        { class: "grid-2" },
        text("resources.queue", "Queue", initial.resources?.queue ?? resolve(root.properties.resources).properties.queue.default, "Worker queue (one per GPU kind)."),
        text("resources.priority", "Priority (0–9)", initial.resources?.priority ?? resolve(root.properties.resources).properties.priority.default, null, { inputmode: "numeric" }),
      ),
      field("f-metadata", "Metadata", h("textarea", { rows: 2, placeholder: "team=vlm" }, Object.entries(initial.metadata || {}).map(([k, v]) => `${k}=${v}`).join("\n")), {
        hint: "One key=value per line; filterable in the jobs list.",
        loc: "metadata",
      }),
    ),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "button", id: "submit-job" }, "Submit job"), h("a", { href: "#/jobs", class: "button secondary" }, "Cancel")),
  );
  for (const source of initial.mixture || [{}]) mixtureRow(source);
  for (const suite of initial.evaluation?.language || []) suiteRow(language, "language", suite);
  for (const suite of initial.evaluation?.vision || []) suiteRow(vision, "vision", suite);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form, summary);
    const button = form.querySelector("#submit-job");
    button.disabled = true;
    button.textContent = "Submitting…";
    try {
      const job = await api("/v1/jobs", { method: "POST", body: collect(form, base), headers: { "Idempotency-Key": idempotencyKey } });
      announce(`Job ${job.name} submitted.`);
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      showErrors(form, summary, error);
      button.disabled = false;
      button.textContent = "Submit job";
    }
  });
  clear(main, form);
  return null;
}

function withPart(node, part) {
  node.dataset.part = part;
  return node;
}

function section(title, ...content) {
  return h("fieldset", { class: "card" }, h("legend", {}, title), content);
}

/** The fields of one spec section from its JSON schema: enum -> select, boolean -> checkbox, else text. */
function schemaSection(key, title, schema, resolve, values) {
  const fields = Object.entries(schema.properties).map(([name, prop]) => {
    const loc = `${key}.${name}`;
    const id = `f-${key}-${name}`;
    const options = (prop.anyOf || [prop]).map(resolve);
    const main = options.find((o) => o.type !== "null") || prop;
    const value = name in values ? values[name] : prop.default;
    let control;
    if (main.enum) {
      control = h("select", {}, main.enum.map((option) => h("option", { value: option, selected: option === value }, option)));
    } else if (main.type === "boolean") {
      control = h("input", { type: "checkbox", checked: Boolean(value) });
    } else {
      control = h("input", { type: "text", value: value ?? "", inputmode: main.type === "integer" ? "numeric" : main.type === "number" ? "decimal" : "text", autocomplete: "off" });
    }
    control.dataset.kind = main.type || "string";
    control.dataset.nullable = String(options.some((o) => o.type === "null"));
    return field(id, name, control, { hint: prop.description, loc }); // labelled with the spec's own key
  });
  return h(
    "fieldset",
    { class: "card", dataset: { fieldLoc: key } },
    h("legend", {}, title),
    h("p", { class: "field-error", hidden: true, id: `f-${key}-error` }),
    h("div", { class: "grid-3" }, fields),
  );
}

function scalar(raw, kind) {
  const text = raw.trim();
  if ((kind === "integer" || kind === "number") && text !== "" && !Number.isNaN(Number(text))) return Number(text);
  return text; // anything else goes as typed: the API says what is wrong with it
}

function controlValue(control) {
  if (control.type === "checkbox") return control.checked;
  return scalar(control.value, control.dataset.kind || "string");
}

/** The spec from the form; the base job's sections the form does not show (evaluation.every...) carry over. */
function collect(form, base) {
  const value = (loc) => form.querySelector(`[data-loc="${loc}"]`);
  const optionalNumber = (loc) => {
    const raw = value(loc).value.trim();
    return raw === "" ? null : scalar(raw, "number");
  };
  const spec = {
    name: value("name").value.trim(),
    student: value("student").value.trim(),
    teacher: value("teacher").value.trim(),
    mixture: [...form.querySelectorAll("[data-row=mixture]")].map((row, i) => ({
      name: value(`mixture.${i}.name`).value.trim(),
      uri: value(`mixture.${i}.uri`).value.trim(),
      weight: scalar(value(`mixture.${i}.weight`).value, "number"),
      distill: value(`mixture.${i}.distill`).checked,
      ...(base?.mixture?.[i]?.max_records ? { max_records: base.mixture[i].max_records } : {}),
    })),
    evaluation: {
      ...(base?.evaluation || {}),
      language: suites(form, "language", value),
      vision: suites(form, "vision", value),
      gates: {
        min_recovery: optionalNumber("evaluation.gates.min_recovery"),
        max_vision_drop: optionalNumber("evaluation.gates.max_vision_drop"),
        min_lift: optionalNumber("evaluation.gates.min_lift"),
      },
      control: value("evaluation.control").checked,
    },
    resources: {
      ...(base?.resources || {}),
      queue: value("resources.queue").value.trim(),
      priority: scalar(value("resources.priority").value, "integer"),
    },
    metadata: Object.fromEntries(
      value("metadata")
        .value.split("\n")
        .map((line) => line.trim())
        .filter(Boolean)
        .map((line) => [line.split("=")[0].trim(), line.split("=").slice(1).join("=").trim()]),
    ),
  };
  for (const [key] of SCHEMA_SECTIONS) {
    spec[key] = {};
    for (const control of form.querySelectorAll(`[data-loc^="${key}."]`)) {
      const name = control.dataset.loc.slice(key.length + 1);
      const raw = controlValue(control);
      if (raw === "" && control.dataset.nullable === "true") spec[key][name] = null;
      else if (raw !== "") spec[key][name] = raw;
    }
  }
  if (base && spec.training.seed === base.training?.seed) spec.training.seed = null; // a clone gets a fresh seed
  return spec;
}

function suites(form, kind, value) {
  return [...form.querySelectorAll(`[data-row=${kind}]`)].map((_, i) => ({
    name: value(`evaluation.${kind}.${i}.name`).value.trim(),
    uri: value(`evaluation.${kind}.${i}.uri`).value.trim(),
  }));
}

function clearErrors(form, summary) {
  clear(summary);
  for (const node of form.querySelectorAll(".field-error")) {
    node.hidden = true;
    node.textContent = "";
  }
  for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
}

/** Put each error beside the closest field its loc names (['body', 'training', 'lr'] -> training.lr). */
function showErrors(form, summary, error) {
  if (!(error instanceof ApiError) || error.errors.length === 0) {
    clear(summary, errorBox(error));
    summary.focus();
    return;
  }
  const items = [];
  let first = null;
  for (const problem of error.errors) {
    const path = problem.loc[0] === "body" ? problem.loc.slice(1) : problem.loc;
    let target = null;
    for (let n = path.length; n >= 0 && !target; n -= 1) {
      target = form.querySelector(`[data-field-loc="${path.slice(0, n).join(".")}"]`);
    }
    const message = problem.msg.replace(/^Value error, /, "");
    const errorNode = target ? target.querySelector(":scope > .field-error") : null;
    if (errorNode) {
      errorNode.textContent = errorNode.textContent ? `${errorNode.textContent} ${message}` : message;
      errorNode.hidden = false;
      const control = target.querySelector(":scope > input, :scope > select, :scope > textarea");
      if (control) control.setAttribute("aria-invalid", "true");
      first = first || control || target;
    }
    const label = path.length ? path.join(" › ") : "spec";
    const link = control_link(target, label);
    items.push(h("li", {}, link, `: ${message}`));
  }
  clear(
    summary,
    h(
      "div",
      { class: "alert error", role: "alert" },
      h("strong", {}, `${error.title}: ${error.errors.length} problem(s)`),
      h("ul", {}, items),
    ),
  );
  (first || summary).focus();
}

function control_link(target, label) {
  const control = target?.querySelector("input, select, textarea");
  if (!control) return h("span", {}, label);
  return h("a", { href: `#${control.id}`, onclick: (event) => { event.preventDefault(); control.focus(); } }, label);
}

async function readyDatasets() {
  try {
    const page = await api("/v1/datasets", { query: { limit: 200 } });
    return page.items.filter((dataset) => dataset.status === "ready"); // kind: training records or suite items
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) throw error;
    return [];
  }
}
