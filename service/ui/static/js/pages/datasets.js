// Datasets: upload (raw body, with upload progress) and the validation problems by line; the paged list.

import { api, uploadFile } from "../api.js";
import { announce, bytes, clear, errorBox, field, h, timeCell } from "../dom.js";

const PAGE = 50;

export async function renderDatasets(main) {
  const file = h("input", { type: "file", accept: ".jsonl,.json,.parquet,application/x-ndjson" });
  const name = h("input", { type: "text", autocomplete: "off" });
  const format = h("select", {}, h("option", { value: "jsonl" }, "JSONL"), h("option", { value: "parquet" }, "Parquet"));
  const kind = h(
    "select",
    {},
    h("option", { value: "training" }, "Training records"),
    h("option", { value: "evaluation" }, "Evaluation suite"),
  );
  const bar = h("progress", { id: "upload-progress", max: 100, value: 0, "aria-label": "Upload progress" });
  const progressText = h("span", { id: "upload-progress-text" });
  const progressBox = h("div", { class: "upload-progress", hidden: true }, bar, progressText);
  const result = h("div", { id: "upload-result", "aria-live": "polite" });
  const button = h("button", { type: "submit", class: "button" }, "Upload and validate");
  const tbody = h("tbody");
  const more = h("div", { class: "pager" });

  file.addEventListener("change", () => {
    const chosen = file.files[0];
    if (!chosen) return;
    if (!name.value) name.value = chosen.name;
    format.value = chosen.name.endsWith(".parquet") ? "parquet" : "jsonl";
  });

  const form = h(
    "form",
    { class: "card", novalidate: true, "aria-labelledby": "upload-title" },
    h("h2", { id: "upload-title" }, "Upload a dataset"),
    h(
      "p",
      { class: "hint" },
      "One record per line in chat form ({\"messages\": […]}) or the short form ({\"prompt\", \"response\", \"images\"}). ",
      "Every record is validated; problems are listed by line.",
    ),
    h(
      "div",
      { class: "grid-4 upload-grid" },
      field("ds-file", "File", file),
      field("ds-name", "Name", name, { hint: "Shown in the job form." }),
      field("ds-format", "Format", format),
      field("ds-kind", "Kind", kind),
    ),
    h("div", { class: "actions" }, button),
    progressBox,
    result,
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = file.files[0];
    const fileError = document.getElementById("ds-file-error");
    fileError.hidden = true;
    file.removeAttribute("aria-invalid");
    if (!chosen) {
      fileError.textContent = "Choose a file to upload.";
      fileError.hidden = false;
      file.setAttribute("aria-invalid", "true");
      file.focus();
      return;
    }
    button.disabled = true;
    progressBox.hidden = false;
    bar.value = 0;
    clear(result);
    try {
      const dataset = await uploadFile("/v1/datasets", chosen, { name: name.value.trim() || chosen.name, format: format.value, kind: kind.value }, (loaded, total, done) => {
        const pct = total ? Math.round((100 * loaded) / total) : 0;
        bar.value = pct;
        bar.setAttribute("aria-valuetext", `${pct} percent`);
        progressText.textContent = done ? " Uploaded; validating records…" : ` ${pct}% · ${bytes(loaded)} of ${bytes(total)}`;
      });
      progressText.textContent = " Done.";
      clear(result, outcome(dataset));
      announce(dataset.status === "ready" ? `Dataset ${dataset.name} is ready.` : `Dataset ${dataset.name} has ${dataset.problems.length} problem(s).`);
      form.reset();
      await load(null, true);
    } catch (error) {
      progressText.textContent = " Failed.";
      clear(result, errorBox(error));
    } finally {
      button.disabled = false;
    }
  });

  clear(
    main,
    h("div", { class: "page-head" }, h("h1", {}, "Datasets")),
    form,
    h(
      "section",
      { class: "card", "aria-labelledby": "list-title" },
      h("h2", { id: "list-title" }, "Your datasets"),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { id: "datasets-table" },
          h("caption", { class: "visually-hidden" }, "Datasets, newest first"),
          h("thead", {}, h("tr", {}, ["Name", "Kind", "Status", "Records", "Size", "URI", "Created"].map((col) => h("th", { scope: "col" }, col)))),
          tbody,
        ),
      ),
      more,
    ),
  );

  async function load(after, replace) {
    let page;
    try {
      page = await api("/v1/datasets", { query: { limit: PAGE, after } });
    } catch (error) {
      clear(tbody, h("tr", {}, h("td", { colspan: 7 }, errorBox(error))));
      return;
    }
    if (replace) clear(tbody);
    if (page.items.length === 0 && replace) tbody.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No datasets yet.")));
    for (const dataset of page.items) tbody.append(...rows(dataset));
    clear(
      more,
      page.next_cursor
        ? h("button", { type: "button", class: "button secondary", onclick: () => load(page.next_cursor, false) }, "Load more")
        : null,
    );
  }

  await load(null, true);
  return null;
}

function rows(dataset) {
  const main = h(
    "tr",
    { dataset: { datasetId: dataset.id } },
    h("th", { scope: "row" }, dataset.name),
    h("td", {}, dataset.kind || "training"),
    h("td", {}, h("span", { class: `badge ds-${dataset.status}` }, dataset.status)),
    h("td", {}, dataset.record_count),
    h("td", {}, bytes(dataset.size_bytes)),
    h("td", {}, h("code", {}, dataset.uri)),
    h("td", {}, timeCell(dataset.created_at)),
  );
  if (!dataset.problems.length) return [main];
  return [main, h("tr", { class: "problems-row" }, h("td", { colspan: 7 }, problems(dataset, false)))];
}

function outcome(dataset) {
  return h(
    "div",
    { class: `alert ${dataset.status === "ready" ? "success" : "warning"}` },
    h(
      "p",
      {},
      h("strong", {}, dataset.status === "ready" ? "Ready: " : "Invalid: "),
      `${dataset.name} — ${dataset.record_count} valid record(s), ${bytes(dataset.size_bytes)}. Use it as `,
      h("code", {}, dataset.uri),
      ".",
    ),
    dataset.problems.length ? problems(dataset, true) : null,
  );
}

function problems(dataset, open) {
  return h(
    "details",
    { class: "problems", open },
    h("summary", {}, `${dataset.problems.length} problem(s) in ${dataset.name}`),
    h(
      "table",
      { class: "compact problems-table" },
      h("caption", { class: "visually-hidden" }, `Problems in ${dataset.name} by line`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Line"), h("th", { scope: "col" }, "Problem"))),
      h(
        "tbody",
        {},
        dataset.problems.map((problem) => h("tr", {}, h("td", { class: "mono" }, lineOf(problem.origin)), h("td", {}, problem.message))),
      ),
    ),
  );
}

function lineOf(origin) {
  const match = /:(?:row )?(\d+)$/.exec(origin);
  return match ? match[1] : origin;
}
