// The public /v1 API with the key the user typed. The key lives in sessionStorage: gone when the tab closes.

const KEY_NAME = "lingudistill.apiKey";

export const session = {
  get key() {
    return sessionStorage.getItem(KEY_NAME);
  },
  set(key) {
    sessionStorage.setItem(KEY_NAME, key);
  },
  clear() {
    sessionStorage.removeItem(KEY_NAME);
  },
};

/** An RFC 9457 problem (or a network failure) with its `code` and per-field `errors`. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code || "http_error";
    this.title = problem.title || `HTTP ${status}`;
    this.errors = problem.errors || [];
  }
}

function authHeaders(extra = {}) {
  const headers = { ...extra };
  if (session.key) headers.Authorization = `Bearer ${session.key}`;
  return headers;
}

export function apiUrl(path, query = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === "") continue;
    for (const one of Array.isArray(value) ? value : [value]) url.searchParams.append(name, String(one));
  }
  return url;
}

async function problemOf(response) {
  try {
    return await response.json();
  } catch {
    return { title: response.statusText || `HTTP ${response.status}` };
  }
}

function onUnauthorized(status) {
  if (status === 401) window.dispatchEvent(new CustomEvent("ld:unauthorized"));
}

/** fetch + JSON + problem+json errors. `raw: true` returns the Response; a 401 sends the user to log in. */
export async function api(path, { method = "GET", query, body, headers = {}, signal, raw = false, relogin = true } = {}) {
  const init = { method, headers: authHeaders({ Accept: "application/json", ...headers }), signal };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(apiUrl(path, query), init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, { title: "Network error", detail: "The service could not be reached.", code: "network" });
  }
  if (!response.ok) {
    if (relogin) onUnauthorized(response.status);
    throw new ApiError(response.status, await problemOf(response));
  }
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

/** A file behind the API (it needs the key, so no plain link): an object URL for <img>, or a download. */
export async function fetchBlob(path) {
  const response = await api(path, { raw: true, headers: { Accept: "*/*" } });
  return response.blob();
}

export async function download(path, filename) {
  if (/^https?:/.test(path)) return clickLink(path, filename); // a presigned URL needs no key
  return saveBlob(await fetchBlob(path), filename);
}

/** Save a blob as a file, as a download link would. */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  clickLink(url, filename);
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function clickLink(href, filename) {
  const link = document.createElement("a");
  link.href = href;
  link.download = filename; // ignored across origins: a presigned URL then opens in a new tab, not over the UI
  if (new URL(href, location.href).origin !== location.origin && !href.startsWith("blob:")) {
    link.target = "_blank";
    link.rel = "noopener";
  }
  document.body.append(link);
  link.click();
  link.remove();
}

/**
 * Follow a job's event stream (SSE over fetch, since EventSource cannot send the key). Resumes with
 * Last-Event-ID after a dropped connection; stops when the server ends the stream for a final job.
 */
export function followEvents(jobId, { after = null, onEvent, onEnd }) {
  const controller = new AbortController();
  let lastId = after;
  let stopped = false;

  async function connect() {
    const headers = authHeaders({ Accept: "text/event-stream" });
    if (lastId !== null) headers["Last-Event-ID"] = String(lastId);
    const response = await fetch(apiUrl(`/v1/jobs/${encodeURIComponent(jobId)}/events`), {
      headers,
      signal: controller.signal,
    });
    if (!response.ok) {
      onUnauthorized(response.status);
      throw new ApiError(response.status, await problemOf(response));
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = frame
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trimStart())
          .join("\n");
        if (!data) continue;
        const event = JSON.parse(data);
        lastId = event.id;
        onEvent(event);
      }
    }
  }

  (async () => {
    let failures = 0;
    while (!stopped) {
      try {
        await connect();
        // The server ends the stream once the job is final; a stream cut for its maximum duration is resumed.
        const job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`, { signal: controller.signal });
        if (FINAL.has(job.status)) break;
        failures = 0;
      } catch (error) {
        if (stopped || error.name === "AbortError" || error.status === 404 || error.status === 401) break;
        failures += 1;
        await new Promise((resolve) => setTimeout(resolve, Math.min(30_000, 1000 * 2 ** failures)));
      }
    }
    if (!stopped && onEnd) onEnd();
  })();

  return {
    close() {
      stopped = true;
      controller.abort();
    },
  };
}

/** Raw-body upload with progress (fetch has no upload progress; XMLHttpRequest does). */
export function uploadFile(path, file, query, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", apiUrl(path, query));
    xhr.setRequestHeader("Authorization", `Bearer ${session.key}`);
    xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.upload.addEventListener("load", () => onProgress(file.size, file.size, true));
    xhr.addEventListener("load", () => {
      let body = {};
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = { title: xhr.statusText };
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else {
        onUnauthorized(xhr.status);
        reject(new ApiError(xhr.status, body));
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, { title: "Network error", code: "network" })));
    xhr.send(file);
  });
}

// The job lifecycle is the API's (service/lifecycle.py): the JobStatus enum of its OpenAPI document, read once
// before any page renders; `x-final` names those of a finished job, `x-actions` the statuses each user action
// (pause, resume) accepts.
const lifecycle = (await fetch("/openapi.json").then((r) => r.json())).components.schemas.JobStatus;
export const STATUSES = lifecycle.enum;
export const FINAL = new Set(lifecycle["x-final"]);
export const ACCEPTS = Object.fromEntries(Object.entries(lifecycle["x-actions"]).map(([action, from]) => [action, new Set(from)]));
