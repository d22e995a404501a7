"""UI fixtures: `lingudistill serve --embedded-workers 1` on a temp data dir (SQLite, local storage, no external
service), a tiny job on disk, and Debian's Chromium driven by Playwright (no browser download).

Screenshots go to artifacts/ui/ (gitignored); `LINGUDISTILL_UI_SCREENSHOTS=docs/screenshots` writes the committed set.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.engine.conftest import build_llava, tiny_spec, write_tiny_data
from tests.service.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("LINGUDISTILL_CHROMIUM", "/usr/bin/chromium")
# The flags this machine needs: no sandbox as root, and no background traffic to Google's hosts (the network is closed)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(os.environ.get("LINGUDISTILL_UI_SCREENSHOTS", str(ROOT / "artifacts" / "ui")))

playwright_sync = pytest.importorskip("playwright.sync_api", reason="the UI tests need the playwright package")
if not Path(CHROMIUM).exists():
    pytest.skip(f"the UI tests need Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


@dataclass
class Server:
    url: str
    key: str
    world: Path
    log: Path

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.log.parent / 'lingudistill.db'}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30)

    def wait_job(self, job_id: str, statuses: set[str], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while time.monotonic() < deadline:
                job = client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] in statuses:
                    return job
                time.sleep(0.3)
        raise AssertionError(f"job {job_id} did not reach {statuses}; server log: {self.log}")


# --- the tiny world ---------------------------------------------------------------------------------------------


def write_eval_suites(folder: Path) -> None:
    """A language suite (sums, multiple choice) and a vision suite (colours, with images) in the tiny vocabulary."""
    numbers = ("zero", "one", "two", "three", "four", "five", "six")
    language = [
        {"question": f"what is {numbers[a]} plus {numbers[b]} ?", "choices": [f"{numbers[a + b]} .", "zero ."]}
        | {"answer": 0}
        for a, b in ((1, 2), (2, 2), (1, 3), (2, 1))
    ]
    colours = ("red", "green", "blue", "yellow")
    vision = [
        {"question": "what colour is the square ?", "choices": [f"the square is {c} ." for c in colours]}
        | {"answer": i % 4, "image": f"images/{i}.png"}
        for i in range(4)
    ]
    shutil.copytree(folder / "data" / "images", folder / "eval" / "images", dirs_exist_ok=True)
    for name, items in (("language", language), ("vision", vision)):
        (folder / "eval" / f"{name}.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))


@pytest.fixture(scope="session")
def ui_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ui-world")
    build_llava(folder, teacher_matches_student=False)
    write_tiny_data(folder)
    write_eval_suites(folder)
    return folder


def api_spec(world: Path, name: str, **overrides: Any) -> dict[str, Any]:
    """The tiny job by API, with absolute paths; `overrides` replace top-level sections."""
    spec = tiny_spec(world, batch_size=1, grad_accum=1, max_steps=6, checkpoint_every=3)
    spec["name"], spec["student"], spec["teacher"] = name, str(world / "student"), str(world / "teacher")
    for source in spec["mixture"]:
        source["uri"] = str(world / source["uri"])
    return {**spec, **overrides}


# --- the server -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def server(ui_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("ui-data")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINGUDISTILL_")}
    env.update(
        PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", LINGUDISTILL_DATA_DIR=str(data),
        LINGUDISTILL_ALLOWED_LOCAL_ROOTS=json.dumps([str(ui_world)]), LINGUDISTILL_SSE_POLL_INTERVAL_S="0.2",
        LINGUDISTILL_RATE_LIMIT_PER_S="1000", LINGUDISTILL_RATE_LIMIT_BURST="1000",
        LINGUDISTILL_WORKER_METRICS_FLUSH_S="0.3", LINGUDISTILL_WORKER_CANCEL_POLL_S="0.3",
    )  # fmt: skip
    key = _create_key(data)
    log = data / "serve.log"
    command = [sys.executable, "-c", "from service.cli import serve; serve()", "--port", str(port)]
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [*command, "--embedded-workers", "1"], cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until(lambda: _up(url), 60, f"the server (log: {log})")
        yield Server(url, key, ui_world, log)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def _create_key(data: Path) -> str:
    from service.db import make_engine, make_sessionmaker, session_scope, upgrade_database
    from service.keys.service import create_key

    url = f"sqlite:///{data / 'lingudistill.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    with session_scope(make_sessionmaker(engine)) as session:
        key = create_key(session, "ui-tests").key
    engine.dispose()
    return key


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# --- the browser ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    profile = tmp_path_factory.mktemp("chromium-profile")  # a new, empty profile for every run
    with playwright_sync.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


@pytest.fixture(scope="session")
def page(browser: Any, server: Server) -> Any:
    """One tab for the whole run: the API key stays in its sessionStorage between tests, as for a user."""
    tab = browser.pages[0] if browser.pages else browser.new_page()
    tab.set_default_timeout(15_000)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda message: _note_csp_violation(message, errors))  # e.g. a chart library's inline style
    tab.js_errors = errors
    return tab


def _note_csp_violation(message: Any, errors: list[str]) -> None:
    if message.type == "error" and "Content Security Policy" in message.text:
        errors.append(message.text)


@pytest.fixture(scope="session")
def shoot() -> Callable[[Any, str], Path]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def save(tab: Any, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        tab.screenshot(path=str(path), full_page=True)
        return path

    return save


@pytest.fixture(scope="session", autouse=True)
def _clean_screenshots() -> None:
    if SCREENSHOTS == ROOT / "artifacts" / "ui":
        shutil.rmtree(SCREENSHOTS, ignore_errors=True)
