// One job: live progress, loss curves, events, checkpoints, the report, the spec, cancel, retry, pause and resume.

import { ACCEPTS, api, download, fetchBlob, FINAL, followEvents } from "../api.js";
import { chartControls, LineChart } from "../chart.js";
import { announce, bytes, clear, clock, duration, errorBox, h, number, statusBadge, timeCell } from "../dom.js";
import { describeEvent, eventLevel } from "../events.js";
import { MetricSeries } from "../metrics.js";
import { checkpointList, modelDownloads } from "../model.js";
import { gatesTable, languageTable, liftTable, verdict, visionTable } from "../report.js";

const POLL_MS = 2000; // step, ETA and metrics are rows, not events: read them while the job is active
const MAX_EVENTS_SHOWN = 300;

export async function renderJob(main, jobId) {
  let job;
  try {
    job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`);
  } catch (error) {
    clear(main, h("h1", {}, "Job"), errorBox(error), h("p", {}, h("a", { href: "#/jobs" }, "Back to the jobs")));
    return null;
  }
  const metrics = new MetricSeries(api, job.id, { names: chartedMetrics(job.spec) });
  const objectUrls = [];
  let alive = true;
  let timer = null;
  let stream = null;
  let reportShown = false;

  const title = h("h1", {}, job.name);
  const statusLine = h("div", { class: "status-line", id: "job-status" }); // changes are announced, not re-read
  const buttons = h("div", { class: "actions" });
  const progressBox = h("section", { class: "card", "aria-labelledby": "progress-title" });
  const lineCharts = [
    new LineChart({ id: "chart-loss", title: "Loss: total, CE and KD", yLabel: "loss" }),
    new LineChart({ id: "chart-sources", title: "Loss per source", yLabel: "loss" }),
    new LineChart({ id: "chart-lr", title: "Learning rate", yLabel: "lr" }),
    new LineChart({ id: "chart-throughput", title: "Throughput", yLabel: "tokens/s" }),
  ];
  const charts = h("div", { class: "charts", id: "charts" }, lineCharts.map((chart) => chart.element));
  const eventsList = h("ol", { class: "timeline", id: "events", "aria-label": "Events, newest first" });
  const modelBox = h("div", { id: "model" });
  const checkpointsBox = h("div", { id: "checkpoints" });
  const reportBox = h("div", { id: "report" }, h("p", { class: "muted" }, "The report appears when the job has been evaluated."));
  const specBox = h("pre", { class: "spec", id: "spec", tabindex: "0", "aria-label": "Resolved spec (JSON)" });

  clear(
    main,
    h("p", { class: "breadcrumb" }, h("a", { href: "#/jobs" }, "Jobs"), " / ", h("span", { class: "mono" }, job.id)),
    h("div", { class: "page-head" }, title, buttons),
    statusLine,
    progressBox,
    section("Training curves", "curves", chartControls(() => lineCharts), charts),
    h(
      "div",
      { class: "two-col" },
      section("Events", "events-title", problemsOnlyToggle(eventsList), eventsList),
      section("Model and checkpoints", "checkpoints-title", modelBox, h("h3", {}, "Checkpoints"), checkpointsBox),
    ),
    section("Recovery report", "report-title", reportBox),
    section("Resolved spec", "spec-title", specBox),
  );
  specBox.textContent = JSON.stringify(job.spec, null, 2);

  function renderHeader() {
    title.textContent = job.name;
    clear(
      statusLine,
      statusBadge(job.status),
      h("span", { class: "muted" }, ` attempt ${job.attempt} of ${job.max_attempts} · queue ${job.queue} · created `),
      timeCell(job.created_at),
      job.sweep_id ? h("span", { class: "muted", id: "job-sweep" }, " · arm ", h("code", {}, job.sweep_arm), " of ", h("a", { href: `#/sweeps/${job.sweep_id}` }, "its sweep")) : null,
      job.failure_message ? h("p", { class: "alert error small" }, `${job.failure_reason || "failed"}: ${job.failure_message}`) : null,
      armLinks(job),
    );
    const cancellable = !FINAL.has(job.status) && job.status !== "cancelling";
    const retriable = job.status === "failed" || job.status === "cancelled";
    clear(
      buttons,
      // shown only where the lifecycle accepts them: a paused job offers Resume in place of Pause
      ACCEPTS.pause.has(job.status) ? h("button", { type: "button", class: "button secondary", id: "pause-job", onclick: pause }, "Pause") : null,
      ACCEPTS.resume.has(job.status) ? h("button", { type: "button", class: "button", id: "resume-job", onclick: resume }, "Resume") : null,
      h("button", { type: "button", class: "button danger", id: "cancel-job", disabled: !cancellable, onclick: cancel }, "Cancel job"),
      h("button", { type: "button", class: "button secondary", id: "retry-job", disabled: !retriable, onclick: retry }, "Retry"),
      h("a", { class: "button secondary", href: `#/new?from=${job.id}` }, "Clone as new job"),
      h("a", { class: "button secondary", href: `#/compare?a=${job.id}` }, "Compare…"),
    );
  }

  function renderProgress() {
    const p = job.progress;
    const pct = p.percent ?? (job.status === "succeeded" ? 100 : 0);
    const facts = [
      ["Step", p.step === null ? "—" : `${p.step} of ${p.total_steps}`],
      ["ETA", FINAL.has(job.status) ? "—" : duration(p.eta_s)],
      ["Throughput", p.tokens_per_s ? `${number(p.tokens_per_s, 3)} tokens/s` : "—"],
      ["Step time", p.step_time_s ? `${number(p.step_time_s, 3)} s` : "—"],
      ["Loss", number(p.latest_metrics?.loss)],
      ["Started", job.started_at ? clock(job.started_at) : "—"],
    ];
    clear(
      progressBox,
      h("h2", { id: "progress-title" }, "Progress"),
      h(
        "div",
        { class: "progress-row" },
        h("progress", { id: "job-progress", max: 100, value: pct, "aria-label": "Training progress", "aria-valuetext": `${Math.round(pct)} percent` }),
        h("strong", { class: "pct" }, `${Math.round(pct)}%`),
      ),
      job.queue_info ? h("p", { class: "muted", id: "queue-info" }, queueText(job.queue_info)) : null,
      h("dl", { class: "facts" }, facts.map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value)))),
    );
  }

  function renderCharts() {
    const [loss, sources, lr, throughput] = lineCharts;
    loss.update(metrics.pick(["loss", "loss_ce", "loss_kd"]));
    sources.update(metrics.matching(["loss_ce/", "loss_kd/"]));
    lr.update(learningRates());
    throughput.update(metrics.pick(["tokens_per_s"]));
  }

  function learningRates() {
    const groups = metrics.matching(["lr/"]);
    return groups.length ? groups : metrics.pick(["lr"]);
  }

  const shownEvents = new Set(); // the stream and the catch-up read may both bring an event: show it once
  function addEvent(event) {
    if (shownEvents.has(event.id)) return;
    shownEvents.add(event.id);
    const level = eventLevel(event);
    const item = h(
      "li",
      { class: `level-${level}`, dataset: { type: event.type, level } },
      h("time", { datetime: event.created_at }, clock(event.created_at)),
      h("span", { class: "event-type" }, event.type.replaceAll("_", " ")),
      h("span", { class: "event-text" }, describeEvent(event)),
    );
    eventsList.prepend(item);
    while (eventsList.children.length > MAX_EVENTS_SHOWN) eventsList.lastElementChild.remove();
  }

  async function renderCheckpoints() {
    clear(modelBox, await modelDownloads(job));
    clear(checkpointsBox, await checkpointList(job));
  }

  async function renderReport() {
    let report;
    try {
      report = await api(`/v1/jobs/${job.id}/report`);
    } catch (error) {
      if (error.code !== "report_not_ready") clear(reportBox, errorBox(error));
      else if (FINAL.has(job.status)) clear(reportBox, h("p", { class: "muted" }, "This job has no report (no evaluation suites, or it did not finish)."));
      return;
    }
    reportShown = true;
    const files = await api(`/v1/jobs/${job.id}/report/files`).catch(() => ({ items: [] }));
    const plots = h("div", { class: "plots", id: "report-plots" });
    const downloads = files.items
      .filter((file) => !file.name.endsWith(".svg"))
      .map((file) =>
        h("li", {}, h("a", { href: file.url, onclick: (event) => { event.preventDefault(); download(file.url, file.name); } }, file.name), h("span", { class: "muted small" }, ` ${bytes(file.size_bytes)}`)),
      );
    clear(
      reportBox,
      verdict(report),
      gatesTable(report),
      report.lift ? h("section", { id: "method-vs-control" }, h("h3", {}, "Method against control"), liftTable(report)) : null,
      report.language?.suites?.length ? languageTable(report) : null,
      report.vision?.suites?.length ? visionTable(report) : null,
      plots,
      downloads.length ? h("div", {}, h("h3", {}, "Report files"), h("ul", { class: "files" }, downloads)) : null,
    );
    for (const file of files.items.filter((f) => f.name.endsWith(".svg"))) {
      try {
        const url = URL.createObjectURL(await fetchBlob(file.url));
        objectUrls.push(url);
        const label = file.name.replace(/\.svg$/, "").replaceAll("_", " ");
        plots.append(h("figure", { class: "plot" }, h("img", { src: url, alt: `Report plot: ${label}` }), h("figcaption", {}, label)));
      } catch {
        /* a missing plot leaves the tables */
      }
    }
  }

  async function refresh() {
    const previous = job.status;
    try {
      job = await api(`/v1/jobs/${job.id}`);
      if (previous !== job.status && job.status === "queued") metrics.reset(); // a retry: a new attempt's curves
      await metrics.refresh();
    } catch {
      return; // the next tick retries
    }
    if (!alive) return;
    renderHeader();
    renderProgress();
    renderCharts();
    if (previous !== job.status) announce(`Job ${job.name} is ${job.status}.`);
    if (FINAL.has(job.status)) await catchUpEvents();
    if (previous !== job.status && FINAL.has(job.status)) await renderCheckpoints(); // the model, once it succeeded
    if (FINAL.has(job.status) && !reportShown) await renderReport();
  }

  // The stream may lag or be queued behind the browser's connection limit: once the job is final, read
  // whatever events the timeline has not shown yet, so it always ends complete.
  async function catchUpEvents() {
    for (;;) {
      const page = await api(`/v1/jobs/${job.id}/events`, { query: { after: lastEventId, limit: 1000 } }).catch(
        () => ({ items: [] }),
      );
      const fresh = page.items.filter((event) => lastEventId === null || event.id > lastEventId);
      fresh.forEach(addEvent);
      if (fresh.length) lastEventId = fresh[fresh.length - 1].id;
      if (page.items.length < 1000) return;
    }
  }

  function schedule() {
    clearTimeout(timer);
    if (!alive) return;
    timer = setTimeout(async () => {
      await refresh();
      if (!FINAL.has(job.status)) schedule();
    }, POLL_MS);
  }

  async function cancel() {
    if (!confirm(`Cancel job ${job.name}?`)) return;
    try {
      job = await api(`/v1/jobs/${job.id}/cancel`, { method: "POST" });
      announce(`Cancel requested: ${job.status}.`);
      renderHeader();
      renderProgress();
      if (FINAL.has(job.status)) await Promise.all([catchUpEvents(), renderCheckpoints(), renderReport()]); // a queued job ends at once
      schedule();
    } catch (error) {
      statusLine.append(errorBox(error));
    }
  }

  // Pause (a queued job at once; a running one through pausing, until its worker saved a checkpoint) and resume.
  function pause() {
    return act("pause", () => (job.status === "paused" ? "Job paused." : "Pause requested: the job stops at its next step, after a checkpoint."));
  }

  function resume() {
    return act("resume", () => "Job resumed: queued to continue from its checkpoint.");
  }

  async function act(action, said) {
    try {
      job = await api(`/v1/jobs/${job.id}/${action}`, { method: "POST" });
      announce(said());
      renderHeader();
      renderProgress();
      schedule();
    } catch (error) {
      statusLine.append(errorBox(error));
    }
  }

  async function retry() {
    try {
      job = await api(`/v1/jobs/${job.id}/retry`, { method: "POST" });
      announce("Retry queued.");
      reportShown = false;
      metrics.reset();
      renderHeader();
      startLive();
    } catch (error) {
      statusLine.append(errorBox(error));
    }
  }

  function startLive() {
    if (stream) stream.close();
    stream = followEvents(job.id, {
      after: lastEventId,
      onEvent: (event) => {
        lastEventId = Math.max(lastEventId ?? 0, event.id);
        addEvent(event);
        if (event.type === "status") refresh();
        if (event.type === "checkpoint") renderCheckpoints();
      },
      onEnd: () => refresh(),
    });
    schedule();
  }

  // First paint: job, curves, the event history, checkpoints, the report; then follow it live.
  renderHeader();
  renderProgress();
  let lastEventId = null;
  try {
    await metrics.refresh();
  } catch {
    /* charts stay empty */
  }
  renderCharts();
  for (let after = null; ; ) {
    const page = await api(`/v1/jobs/${job.id}/events`, { query: { after, limit: 1000 } }).catch(() => ({ items: [] }));
    page.items.forEach(addEvent);
    if (page.items.length) lastEventId = page.items[page.items.length - 1].id;
    if (page.items.length < 1000) break;
    after = lastEventId;
  }
  await renderCheckpoints();
  await renderReport();
  if (!FINAL.has(job.status)) startLive();

  return () => {
    alive = false;
    clearTimeout(timer);
    if (stream) stream.close();
    lineCharts.forEach((chart) => chart.destroy());
    objectUrls.forEach((url) => URL.revokeObjectURL(url));
  };
}

function chartedMetrics(spec) {
  const sources = spec.mixture.flatMap((source) => [`loss_ce/${source.name}`, `loss_kd/${source.name}`]);
  return ["loss", "loss_ce", "loss_kd", "tokens_per_s", "lr", "lr/decoder", "lr/projector", "lr/vision", ...sources];
}

/** Like a log viewer's level filter: hide the info events to see what went wrong. */
function problemsOnlyToggle(list) {
  const box = h("input", { type: "checkbox", id: "events-problems-only" });
  box.addEventListener("change", () => list.classList.toggle("problems-only", box.checked));
  return h("label", { class: "check-inline small events-filter" }, box, " Warnings and errors only");
}

function queueText(info) {
  const start = info.estimated_start_s === null || info.estimated_start_s === undefined ? "" : ` · starts in about ${duration(info.estimated_start_s)}`;
  return `Queued: ${info.reason}${start}`;
}

/** The other arm of a job with a control (evaluation.control), and what a comparing job waits for. */
function armLinks(job) {
  const link = (id) => h("a", { href: `#/jobs/${id}`, class: "mono" }, id);
  if (job.control_job_id) {
    const waiting = job.status === "comparing" ? " — trained and evaluated; the lift is reported once the control arm has finished" : "";
    return h("p", { class: "small", id: "arm-link" }, "Control arm (the same job without distillation): ", link(job.control_job_id), waiting);
  }
  if (job.control_of) return h("p", { class: "small", id: "arm-link" }, "This is the control arm (no distillation) of ", link(job.control_of));
  return null;
}

function section(title, id, ...content) {
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), content);
}
