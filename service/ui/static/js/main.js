// The hash router: #/login, #/jobs, #/jobs/{id}, #/new, #/datasets, #/compare, #/sweeps, #/sweeps/{id}. Each page is
// `render(main, params) -> cleanup?`; the cleanup stops its streams and timers when the user leaves.

import { api, ApiError, session } from "./api.js";
import { announce, clear, field, h } from "./dom.js";
import { renderCompare } from "./pages/compare.js";
import { renderDatasets } from "./pages/datasets.js";
import { renderJob } from "./pages/job.js";
import { renderJobs } from "./pages/jobs.js";
import { renderNewJob } from "./pages/newjob.js";
import { renderSweep, renderSweeps } from "./pages/sweeps.js";

const ROUTES = [
  [/^\/jobs\/([^/?]+)$/, "jobs", renderJob],
  [/^\/jobs$/, "jobs", renderJobs],
  [/^\/new$/, "new", renderNewJob],
  [/^\/datasets$/, "datasets", renderDatasets],
  [/^\/compare$/, "compare", renderCompare],
  [/^\/sweeps\/([^/?]+)$/, "sweeps", renderSweep],
  [/^\/sweeps$/, "sweeps", renderSweeps],
];

let cleanup = null;

function currentPath() {
  const hash = location.hash.slice(1) || "/jobs";
  return hash.split("?")[0];
}

async function route() {
  if (typeof cleanup === "function") cleanup();
  cleanup = null;
  const main = document.getElementById("main");
  const path = currentPath();
  showChrome(Boolean(session.key));
  if (!session.key || path === "/login") {
    renderLogin(main);
    return;
  }
  const match = ROUTES.map(([pattern, nav, render]) => [path.match(pattern), nav, render]).find(([m]) => m);
  if (!match) {
    clear(main, h("h1", { tabindex: "-1" }, "Not found"), h("p", {}, h("a", { href: "#/jobs" }, "Back to the jobs")));
    focusHeading(main);
    return;
  }
  const [found, nav, render] = match;
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clear(main);
  cleanup = await render(main, ...found.slice(1).map(decodeURIComponent));
  focusHeading(main);
}

/** Move focus to the new page's heading so keyboard and screen-reader users start at the top of it. */
function focusHeading(main) {
  const heading = main.querySelector("h1");
  if (!heading) return;
  heading.setAttribute("tabindex", "-1");
  if (!document.activeElement || document.activeElement === document.body || !main.contains(document.activeElement)) {
    heading.focus({ preventScroll: false });
  }
  document.title = `${heading.textContent} · LinguDistill`;
}

function showChrome(signedIn) {
  document.getElementById("main-nav").hidden = !signedIn;
  document.getElementById("session").hidden = !signedIn;
  if (signedIn) document.getElementById("session-key").textContent = `Key ${session.key.slice(0, 12)}…`;
}

function renderLogin(main) {
  const input = h("input", { type: "password", name: "api-key", autocomplete: "off", spellcheck: "false", required: true });
  const status = h("div", { class: "form-status", role: "status" });
  const form = h(
    "form",
    { class: "card narrow", novalidate: true, "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Log in"),
    h(
      "p",
      { class: "muted" },
      "Paste an API key (",
      h("code", {}, "lingudistill keys create --tenant NAME"),
      "). It is kept for this browser tab only and sent to the API as a Bearer token; you see your tenant's jobs.",
    ),
    field("login-key", "API key", input),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "button" }, "Log in")),
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    const error = document.getElementById("login-key-error");
    error.hidden = true;
    input.removeAttribute("aria-invalid");
    if (!key) return showLoginError(input, error, "Enter an API key.");
    session.set(key);
    status.textContent = "Checking the key…";
    try {
      await api("/v1/jobs", { query: { limit: 1 }, relogin: false });
    } catch (caught) {
      session.clear();
      status.textContent = "";
      const message =
        caught instanceof ApiError && caught.status === 401 ? "This key is unknown or revoked." : caught.message;
      return showLoginError(input, error, message);
    }
    announce("Logged in.");
    const target = sessionStorage.getItem("lingudistill.afterLogin") || "#/jobs";
    sessionStorage.removeItem("lingudistill.afterLogin");
    if (location.hash === target) route();
    else location.hash = target;
  });
  clear(main, form);
  focusHeading(main);
  input.focus();
}

function showLoginError(input, error, message) {
  error.textContent = message;
  error.hidden = false;
  input.setAttribute("aria-invalid", "true");
  input.focus();
}

window.addEventListener("hashchange", route);
window.addEventListener("ld:unauthorized", () => {
  session.clear();
  if (currentPath() !== "/login") sessionStorage.setItem("lingudistill.afterLogin", location.hash || "#/jobs");
  announce("Your API key was refused; log in again.");
  location.hash = "#/login";
});
function start() {
  document.getElementById("logout").addEventListener("click", () => {
    session.clear();
    announce("Logged out.");
    location.hash = "#/login";
    route();
  });
  document.getElementById("skip-link").addEventListener("click", (event) => {
    event.preventDefault(); // the hash is the router's
    document.getElementById("main").focus();
  });
  route();
}
// api.js reads the lifecycle from the OpenAPI document before this module runs, which may be after
// DOMContentLoaded has fired: start at once then.
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
