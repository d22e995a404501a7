// A job's repaired model and its checkpoints, as downloads. Local-storage files need the Bearer key, so they are
// fetched with it, checked against the sha256 manifest and then saved; S3 files are presigned links.

import { api, download, fetchBlob, FINAL, saveBlob } from "./api.js";
import { bytes, errorBox, h } from "./dom.js";

const MAX_CHECKED_BYTES = 1024 ** 3; // hashing reads the whole file into memory: bigger files are saved unchecked

export async function modelDownloads(job) {
  if (job.status !== "succeeded") return h("p", { class: "muted" }, modelPendingText(job));
  let model;
  try {
    model = await api(`/v1/jobs/${job.id}/model`);
  } catch (error) {
    if (error.code === "model_not_ready") return h("p", { class: "muted" }, "The repaired model is still being uploaded.");
    return errorBox(error);
  }
  const rows = model.files.map(fileRow);
  return h(
    "div",
    { class: "model-box" },
    h("h3", {}, "Repaired model"),
    h("p", {}, `${model.files.length} files, ${bytes(model.size_bytes)}: the student's Hugging Face folder, same parameters as before.`),
    h(
      "div",
      { class: "actions" },
      h("button", { type: "button", class: "button", id: "download-model", onclick: () => saveAll(rows) }, `Download all ${model.files.length} files`),
      h("button", { type: "button", class: "button secondary", onclick: () => saveManifest(model.manifest) }, "SHA256SUMS"),
    ),
    h("ul", { class: "files", "aria-label": "Model files" }, rows),
    h("p", { class: "hint" }, "Or from a shell, every file checked against its sha256: ", h("code", {}, `lingudistill jobs download ${job.id} model/`)),
  );
}

function modelPendingText(job) {
  if (!FINAL.has(job.status)) return "The repaired model appears here when the job succeeds.";
  return `This job ended ${job.status} without a model. Retry runs it again, from its last checkpoint if it has one.`;
}

export async function checkpointList(job) {
  let list;
  try {
    list = await api(`/v1/jobs/${job.id}/checkpoints`);
  } catch (error) {
    return errorBox(error);
  }
  if (!list.items.length) return h("p", { class: "muted" }, noCheckpointText(job));
  return list.items.map((checkpoint) =>
    h(
      "details",
      { class: "checkpoint", dataset: { step: checkpoint.step } },
      h("summary", {}, `Step ${checkpoint.step} · attempt ${checkpoint.attempt} · ${bytes(checkpoint.size_bytes)} · ${checkpoint.files.length} files`),
      h("ul", { class: "files", "aria-label": `Files of the checkpoint at step ${checkpoint.step}` }, checkpoint.files.map(fileRow)),
    ),
  );
}

function noCheckpointText(job) {
  const every = job.spec.training?.checkpoint_every;
  const cadence = every ? ` (one every ${every} steps)` : "";
  if (job.status === "succeeded") {
    return `No intermediate checkpoint was kept${cadence}: the run had ${job.progress.total_steps} steps. The final model is above.`;
  }
  if (FINAL.has(job.status)) return `No checkpoint was completed${cadence}, so a retry starts from the first step.`;
  return `No complete checkpoint yet${cadence}.`;
}

/** One file: a link that saves it (checked), its short sha256, and what happened. */
function fileRow(file) {
  const name = file.path.split("/").pop();
  const status = h("span", { class: "file-status small", role: "status" });
  const link = h("a", { href: file.url, download: name, onclick: (event) => { event.preventDefault(); saveChecked(file, status); } }, file.path);
  const row = h("li", { dataset: { path: file.path } }, link, h("span", { class: "muted mono small", title: `sha256 ${file.sha256}` }, ` ${file.sha256.slice(0, 12)}…`), status);
  row.save = () => saveChecked(file, status);
  return row;
}

async function saveChecked(file, status) {
  const name = file.path.split("/").pop();
  if (/^https?:/.test(file.url)) return saveLink(file.url, name, status); // presigned: the browser fetches it
  setStatus(status, "pending", " downloading…");
  try {
    const blob = await fetchBlob(file.url);
    const matches = await sha256Matches(blob, file.sha256);
    if (matches === false) return setStatus(status, "bad", " ✗ sha256 mismatch: not saved");
    saveBlob(blob, name);
    setStatus(status, "ok", matches ? " ✓ sha256 verified, saved" : " saved (too large to check here)");
  } catch (error) {
    setStatus(status, "bad", ` ✗ ${error.message}`);
  }
}

function saveLink(url, name, status) {
  download(url, name);
  setStatus(status, "ok", " download started");
}

async function saveAll(rows) {
  for (const row of rows) await row.save(); // one after another: the browser may ask once to allow several files
}

function saveManifest(manifest) {
  const lines = Object.entries(manifest).map(([path, sha]) => `${sha}  ${path}\n`);
  saveBlob(new Blob(lines, { type: "text/plain" }), "SHA256SUMS");
}

/** true or false; null when it cannot be checked here (no WebCrypto outside a secure context, or too big). */
async function sha256Matches(blob, expected) {
  if (!globalThis.crypto?.subtle || blob.size > MAX_CHECKED_BYTES) return null;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", await blob.arrayBuffer()));
  const hex = [...digest].map((byte) => byte.toString(16).padStart(2, "0")).join("");
  return hex === expected;
}

function setStatus(status, kind, text) {
  status.className = `file-status small ${kind}`;
  status.textContent = text;
}
