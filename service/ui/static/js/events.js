// A job event as a sentence a person reads, and its level (info, warning, error) for colour.
// The API's own `message` and `level` win when present; older events are described from their type and data.

import { bytes, h, percent } from "./dom.js";

const ERROR_TYPES = new Set(["child_error", "attempt_failed", "stalled", "checkpoint_upload_failed", "checkpoint_rejected"]);
const WARNING_TYPES = new Set(["stopping"]);
const STATUS_LEVELS = { failed: "error", cancelling: "warning", cancelled: "warning" };

export function eventLevel(event) {
  if (event.level) return normalLevel(event.level);
  if (ERROR_TYPES.has(event.type)) return "error";
  if (WARNING_TYPES.has(event.type)) return "warning";
  if (event.type === "status") return STATUS_LEVELS[event.data?.status] || "info";
  return "info";
}

function normalLevel(level) {
  const lower = String(level).toLowerCase();
  if (lower === "warn") return "warning";
  return ["debug", "info", "warning", "error"].includes(lower) ? lower : lower === "critical" ? "error" : "info";
}

/** The event's text, with long technical detail (a traceback, a stack) folded away under it. */
export function describeEvent(event) {
  const data = event.data || {};
  const text = event.message || sentence(event.type, data);
  const detail = data.traceback || data.stack;
  if (!detail) return text;
  return [text, h("details", { class: "event-detail" }, h("summary", {}, data.traceback ? "Traceback" : "Stack"), h("pre", {}, detail))];
}

const SENTENCES = {
  status: statusSentence,
  training: (d) => (d.from_step ? `Training resumed at step ${d.from_step} of ${d.total_steps}.` : `Training started: ${d.total_steps} steps.`),
  checkpoint: (d) => `Checkpoint saved at step ${d.step} (${bytes(d.size_bytes)}).`,
  checkpoint_rejected: (d) => `The checkpoint at step ${d.step} was unusable and skipped: ${d.error}`,
  checkpoint_upload_failed: (d) => `The checkpoint at step ${d.step} could not be uploaded: ${d.error}`,
  resuming: (d) => `Resuming from the checkpoint at step ${d.step}.`,
  child_started: (d) => `Training process started${d.worker ? ` on ${d.worker}` : ""}${d.ranks ? ` with ${d.ranks} GPU(s)` : ""}${d.resume ? ", resuming" : ""}.`,
  evaluation: (d) => `Evaluated at step ${d.step}: ${Object.entries(d.scores || {}).map(([name, value]) => `${name} ${percent(value)}`).join(", ")}.`,
  stopping: (d) => `Stopping the training process (${d.grace_s} s to save a checkpoint).`,
  stalled: (d) => `No progress for ${d.seconds} s at step ${d.step ?? "—"}; the training process is stopped.`,
  child_error: (d) => `The training process failed: ${d.error}`,
  uploaded: (d) => `Uploaded the repaired model (${d.model_files} file(s)) and the report (${d.artifact_files} file(s)).`,
  attempt_failed: (d) => `This attempt failed (${d.reason || "error"}): ${d.message || ""}`,
};

function sentence(type, data) {
  const make = SENTENCES[type];
  if (make) return make(data);
  const pairs = Object.entries(data).map(([key, value]) => `${key.replaceAll("_", " ")}: ${plain(value)}`);
  return [capitalised(type.replaceAll("_", " ")), ...pairs].join(" · ");
}

function statusSentence(data) {
  const parts = [capitalised(data.status)];
  if (data.by) parts.push(`by ${data.by}`);
  if (data.worker) parts.push(`on ${data.worker}`);
  if (data.held) parts.push("(held: not dispatched yet)");
  if (data.retry) parts.push("(retry)");
  const resumeStep = data.resume_checkpoint_step ?? data.resume_from_step;
  if (resumeStep) parts.push(`to resume from the checkpoint at step ${resumeStep}`);
  const text = `${parts.join(" ")}.`;
  if (!data.failure_message) return text;
  const reason = data.failure_reason && data.failure_reason !== data.status ? `${data.failure_reason}: ` : "";
  return `${text} ${reason}${data.failure_message}`;
}

function plain(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "object") return String(value);
  if (Array.isArray(value)) return value.map(plain).join(", ");
  return Object.entries(value).map(([key, inner]) => `${key} ${plain(inner)}`).join(", ");
}

function capitalised(text) {
  const value = String(text ?? "");
  return value.charAt(0).toUpperCase() + value.slice(1);
}
