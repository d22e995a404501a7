// Jobs: a cursor-paged, filterable table that follows its unfinished jobs' event streams.

import { api, FINAL, followEvents, STATUSES } from "../api.js";
import { announce, clear, duration, errorBox, h, navigate, percent, routeQuery, statusBadge, timeCell } from "../dom.js";

const PAGE_SIZES = [25, 50, 100];
const MAX_STREAMS = 4; // a browser opens ~6 connections per host over HTTP/1.1: leave room for the API calls
const REFRESH_MS = 5000; // progress (step, ETA) is not in the event log: the page is re-read while jobs run
const IDLE_REFRESH_MS = 20000; // new jobs appear on the first page
const reports = new Map(); // job id -> report, for the recovery column (a finished job's report never changes)

export async function renderJobs(main) {
  const query = routeQuery();
  const filters = {
    status: query.getAll("status"),
    name: query.get("name") || "",
    metadata: query.get("metadata") || "",
    created_after: query.get("created_after") || "",
    limit: Number(query.get("limit")) || PAGE_SIZES[0],
  };
  const cursors = (query.get("trail") || "").split(",").filter(Boolean); // the `after` of each page so far
  const after = cursors[cursors.length - 1] || null;
  const selected = new Set();
  const streams = new Map();
  let timer = null;
  let alive = true;

  const compareButton = h("button", { type: "button", class: "button secondary", disabled: true }, "Compare selected (0/2)");
  compareButton.addEventListener("click", () => {
    const [a, b] = [...selected];
    navigate("/compare", { a, b });
  });
  const tbody = h("tbody");
  const live = h("p", { class: "muted live-note", "aria-live": "polite" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages of jobs" });
  const firstRun = firstRunHint();
  const unfiltered = !filters.status.length && !filters.name && !filters.metadata && !filters.created_after && !after;
  const table = h(
    "table",
    { class: "jobs", id: "jobs-table" },
    h("caption", { class: "visually-hidden" }, "Jobs, newest first"),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Select to compare")),
        ["Name", "Status", "Progress", "ETA", "Recovery", "Created"].map((name) => h("th", { scope: "col" }, name)),
      ),
    ),
    tbody,
  );

  clear(
    main,
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, "Jobs"),
      h("div", { class: "actions" }, compareButton, h("a", { class: "button", href: "#/new" }, "New job")),
    ),
    firstRun,
    filterForm(filters),
    live,
    h("div", { class: "table-wrap" }, table),
    pager,
  );

  async function load() {
    let page;
    try {
      page = await api("/v1/jobs", {
        query: {
          limit: filters.limit,
          after,
          status: filters.status,
          name: filters.name,
          metadata: filters.metadata ? filters.metadata.split(",").map((p) => p.trim()) : null,
          created_after: filters.created_after ? new Date(filters.created_after).toISOString() : null,
        },
      });
    } catch (error) {
      clear(tbody, h("tr", {}, h("td", { colspan: 7 }, errorBox(error))));
      return;
    }
    if (!alive) return;
    renderRows(page.items);
    renderPager(page.next_cursor);
    follow(page.items);
    const active = page.items.some((job) => !FINAL.has(job.status));
    clearTimeout(timer);
    timer = setTimeout(load, active ? REFRESH_MS : IDLE_REFRESH_MS);
  }

  function renderRows(jobs) {
    firstRun.hidden = !(jobs.length === 0 && unfiltered);
    if (jobs.length === 0) {
      clear(tbody, h("tr", {}, h("td", { colspan: 7, class: "muted" }, unfiltered ? "No jobs yet." : "No jobs match.")));
      return;
    }
    clear(tbody, jobs.map((job) => row(job)));
    for (const job of jobs) if (job.status === "succeeded") loadRecovery(job.id);
  }

  function row(job) {
    const checkbox = h("input", {
      type: "checkbox",
      "aria-label": `Select ${job.name} to compare`,
      checked: selected.has(job.id),
      onchange: (event) => {
        if (event.target.checked) selected.add(job.id);
        else selected.delete(job.id);
        while (selected.size > 2) selected.delete(selected.values().next().value);
        for (const box of tbody.querySelectorAll("input[type=checkbox]")) box.checked = selected.has(box.closest("tr").dataset.jobId);
        compareButton.disabled = selected.size !== 2;
        compareButton.textContent = `Compare selected (${selected.size}/2)`;
      },
    });
    const p = job.progress;
    const pct = p.percent ?? (job.status === "succeeded" ? 100 : null);
    return h(
      "tr",
      { dataset: { jobId: job.id, status: job.status } },
      h("td", {}, checkbox),
      h("td", {}, h("a", { href: `#/jobs/${job.id}` }, job.name), h("div", { class: "muted small mono" }, job.id)),
      h("td", { class: "status-cell" }, statusBadge(job.status)),
      h(
        "td",
        { class: "progress-cell" },
        pct === null
          ? h("span", { class: "muted" }, job.queue_info ? queuePlace(job.queue_info) : "—")
          : [
              h("progress", { max: 100, value: pct, "aria-label": `${job.name} progress` }),
              h("span", { class: "small" }, ` ${Math.round(pct)}% · ${p.step ?? 0}/${p.total_steps}`),
            ],
      ),
      h("td", {}, FINAL.has(job.status) ? "—" : duration(p.eta_s)),
      h("td", { class: "recovery-cell" }, recoveryText(job)),
      h("td", {}, timeCell(job.created_at)),
    );
  }

  function recoveryText(job) {
    const report = reports.get(job.id);
    if (report === null || job.status !== "succeeded") return "—"; // null: a finished job without a report
    if (!report) return "…";
    const value = report.language?.mean_recovery;
    return h(
      "span",
      { class: report.passed ? "verdict pass" : "verdict fail" },
      value === null || value === undefined ? "n/a" : percent(value),
      report.passed ? " ✓ passed" : " ✗ gates failed",
    );
  }

  async function loadRecovery(jobId) {
    if (!reports.has(jobId)) {
      try {
        reports.set(jobId, await api(`/v1/jobs/${jobId}/report`));
      } catch (error) {
        if (error.code === "report_not_ready") reports.set(jobId, null); // no evaluation suites: never a report
        else return;
      }
    }
    const cell = tbody.querySelector(`tr[data-job-id="${jobId}"] .recovery-cell`);
    if (cell) clear(cell, recoveryText({ id: jobId, status: "succeeded" }));
  }

  function follow(jobs) {
    const wanted = jobs.filter((job) => !FINAL.has(job.status)).slice(0, MAX_STREAMS).map((job) => job.id);
    for (const [id, stream] of streams) {
      if (!wanted.includes(id)) {
        stream.close();
        streams.delete(id);
      }
    }
    for (const id of wanted) {
      if (streams.has(id)) continue;
      streams.set(
        id,
        followEvents(id, {
          onEvent: (event) => onEvent(id, event),
          onEnd: () => {
            streams.delete(id);
            liveNote();
          },
        }),
      );
    }
    liveNote();
  }

  function liveNote() {
    const text = streams.size ? `Following ${streams.size} unfinished job(s) live.` : "";
    if (live.textContent !== text) live.textContent = text;
  }

  async function onEvent(id, event) {
    if (event.type !== "status" && event.type !== "checkpoint" && event.type !== "training") return;
    try {
      const job = await api(`/v1/jobs/${id}`);
      const current = tbody.querySelector(`tr[data-job-id="${id}"]`);
      if (!current || !alive) return;
      if (current.dataset.status !== job.status && FINAL.has(job.status)) announce(`Job ${job.name} ${job.status}.`);
      current.replaceWith(row(job));
      if (job.status === "succeeded") loadRecovery(id);
    } catch {
      /* the next page refresh catches up */
    }
  }

  function renderPager(nextCursor) {
    const base = { ...routeParams(filters) };
    const newer = cursors.length
      ? h("a", { class: "button secondary", href: hrefFor({ ...base, trail: cursors.slice(0, -1).join(",") }) }, "← Newer")
      : h("span", { class: "button secondary", "aria-disabled": "true" }, "← Newer");
    const older = nextCursor
      ? h("a", { class: "button secondary", href: hrefFor({ ...base, trail: [...cursors, nextCursor].join(",") }), rel: "next" }, "Older →")
      : h("span", { class: "button secondary", "aria-disabled": "true" }, "Older →");
    clear(pager, newer, h("span", { class: "muted" }, `Page ${cursors.length + 1}`), older);
  }

  await load();
  return () => {
    alive = false;
    clearTimeout(timer);
    for (const stream of streams.values()) stream.close();
  };
}

/** For a tenant with no job yet: the three ways to submit one. */
function firstRunHint() {
  const origin = location.origin;
  const shell = `export LINGUDISTILL_URL=${origin}\nexport LINGUDISTILL_API_KEY=<your key>\nlingudistill submit job.yaml --wait`;
  const http = `curl -X POST ${origin}/v1/jobs \\\n  -H "Authorization: Bearer $LINGUDISTILL_API_KEY" \\\n  -H "Content-Type: application/json" -d @job.json`;
  return h(
    "section",
    { class: "card first-run", id: "first-run", hidden: true, "aria-labelledby": "first-run-title" },
    h("h2", { id: "first-run-title" }, "Submit your first job"),
    h("p", {}, "A job repairs a student VLM with its original LM as the teacher. Upload training data on ", h("a", { href: "#/datasets" }, "Datasets"), " first if it is not on a path the service can read. Then:"),
    h(
      "ol",
      {},
      h("li", {}, h("strong", {}, "In the browser: "), "fill in the ", h("a", { href: "#/new" }, "New job"), " form (every field has the spec's default and help)."),
      h("li", {}, h("strong", {}, "From a shell, "), "with a job spec in YAML:", h("pre", {}, h("code", {}, shell))),
      h("li", {}, h("strong", {}, "Over HTTP, "), "with the same spec as JSON (the contract is at ", h("a", { href: "/docs" }, "/docs"), "):", h("pre", {}, h("code", {}, http))),
    ),
  );
}

function queuePlace(info) {
  const start = info.estimated_start_s === null || info.estimated_start_s === undefined ? "" : ` · ~${duration(info.estimated_start_s)}`;
  return `#${info.position + 1} in queue${start}`;
}

function routeParams(filters) {
  const params = new URLSearchParams();
  for (const status of filters.status) params.append("status", status);
  for (const name of ["name", "metadata", "created_after"]) if (filters[name]) params.set(name, filters[name]);
  if (filters.limit !== PAGE_SIZES[0]) params.set("limit", filters.limit);
  return Object.fromEntries([...params.keys()].map((k) => [k, k === "status" ? params.getAll(k) : params.get(k)]));
}

function hrefFor(values) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(values)) {
    if (Array.isArray(value)) value.forEach((v) => params.append(key, v));
    else if (value) params.set(key, value);
  }
  const query = params.toString();
  return query ? `#/jobs?${query}` : "#/jobs";
}

function filterForm(filters) {
  const search = h("input", { type: "search", id: "filter-name", name: "name", value: filters.name, placeholder: "exact name or a job id" });
  const metadata = h("input", { type: "text", id: "filter-metadata", name: "metadata", value: filters.metadata, placeholder: "team=vlm" });
  const since = h("input", { type: "date", id: "filter-since", name: "created_after", value: filters.created_after });
  const size = h(
    "select",
    { id: "filter-limit", name: "limit" },
    PAGE_SIZES.map((n) => h("option", { value: n, selected: n === filters.limit }, n)),
  );
  const statuses = h(
    "fieldset",
    { class: "statuses" },
    h("legend", {}, "Status"),
    STATUSES.map((status) =>
      h(
        "label",
        { class: "chip" },
        h("input", { type: "checkbox", name: "status", value: status, checked: filters.status.includes(status) }),
        ` ${status}`,
      ),
    ),
  );
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter jobs" },
    h(
      "div",
      { class: "filter-row" },
      h("div", { class: "field" }, h("label", { for: "filter-name" }, "Search"), search),
      h("div", { class: "field" }, h("label", { for: "filter-metadata" }, "Metadata (key=value, …)"), metadata),
      h("div", { class: "field" }, h("label", { for: "filter-since" }, "Created after"), since),
      h("div", { class: "field" }, h("label", { for: "filter-limit" }, "Per page"), size),
    ),
    statuses,
    h(
      "div",
      { class: "actions" },
      h("button", { type: "submit", class: "button" }, "Apply filters"),
      h("a", { href: "#/jobs", class: "button secondary" }, "Clear"),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const term = search.value.trim();
    if (/^job_[0-9a-z]{26}$/.test(term)) {
      location.hash = `#/jobs/${term}`; // a job id goes straight to its page
      return;
    }
    const chosen = [...form.querySelectorAll("input[name=status]:checked")].map((box) => box.value);
    location.hash = hrefFor({
      status: chosen,
      name: term,
      metadata: metadata.value.trim(),
      created_after: since.value,
      limit: Number(size.value) === PAGE_SIZES[0] ? "" : size.value,
    });
  });
  return form;
}
