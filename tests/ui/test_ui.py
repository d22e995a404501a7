"""The web UI end to end: real headless Chromium against `lingudistill serve --embedded-workers 1`.

The tests share one server and one browser tab and run in file order, as one user's session would: log in, upload
data, get a validation error, submit and watch a job, cancel another, compare two.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from tests.ui.conftest import Server, api_spec

JOB_TIMEOUT_MS = 120_000


def _open(page: Page, server: Server, route: str) -> None:
    """A fresh page load of the route (the key stays in the tab's sessionStorage)."""
    url = f"{server.url}/ui/#{route}"
    if page.url == url:
        page.reload()
    else:
        page.goto(url)


def _field(page: Page, loc: str) -> Any:
    return page.locator(f'[data-loc="{loc}"]')


def _heading(page: Page, text: str) -> None:
    expect(page.get_by_role("heading", level=1)).to_have_text(text)


def test_login_refuses_a_bad_key_then_shows_the_jobs(page: Page, server: Server, shoot: Any) -> None:
    _open(page, server, "/jobs")
    _heading(page, "Log in")
    expect(page.get_by_role("button", name="Log out")).to_be_hidden()  # `hidden` wins over the bar's display: flex
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    shoot(page, "login")

    page.get_by_label("API key").fill("ldk_not-a-real-key")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-key-error")).to_have_text("This key is unknown or revoked.")
    expect(page.get_by_label("API key")).to_have_attribute("aria-invalid", "true")

    page.get_by_label("API key").fill(server.key)
    page.get_by_role("button", name="Log in").click()
    _heading(page, "Jobs")
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    expect(page.locator("#jobs-table")).to_contain_text("No jobs yet.")
    hint = page.get_by_role("region", name="Submit your first job")  # the three ways to submit, on first run
    expect(hint.get_by_role("link", name="New job")).to_be_visible()
    expect(hint).to_contain_text(f"LINGUDISTILL_URL={server.url}")
    expect(hint).to_contain_text("lingudistill submit job.yaml --wait")
    expect(hint).to_contain_text(f"curl -X POST {server.url}/v1/jobs")
    shoot(page, "jobs-first-run")


UNLABELLED_CONTROLS = """[...document.querySelectorAll('main input, main select, main textarea, main button')]
    .filter(c => !(c.labels && c.labels.length) && !c.getAttribute('aria-label') && !c.textContent.trim())
    .map(c => c.outerHTML)"""


def test_keyboard_and_labels(page: Page, server: Server) -> None:
    for route in ("/jobs", "/new", "/datasets", "/compare"):
        _open(page, server, route)
        expect(page.get_by_role("heading", level=1)).to_be_focused()  # focus moves to the new page's heading
        assert page.evaluate(UNLABELLED_CONTROLS) == [], route
    first = page.evaluate("document.querySelector('a[href], button, input, select, textarea').id")
    assert first == "skip-link"
    page.locator("#skip-link").focus()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Job A")).to_be_focused()  # the first control of the compare page


def test_upload_datasets_with_progress_and_problems_by_line(page: Page, server: Server, shoot: Any) -> None:
    _open(page, server, "/datasets")
    _heading(page, "Datasets")
    bad = server.world / "bad.jsonl"
    bad.write_text('{"prompt": "what is one plus one ?", "response": "two ."}\n{"prompt": 3}\nnot json\n')

    expect(page.locator("#upload-progress")).to_be_hidden()  # no empty bar before the first upload
    page.get_by_label("File").set_input_files(str(bad))
    page.get_by_role("button", name="Upload and validate").click()
    result = page.locator("#upload-result")
    expect(result).to_contain_text("Invalid: bad.jsonl")
    expect(result.locator(".problems-table tbody tr")).to_have_count(2)
    expect(result.locator(".problems-table tbody tr").first.locator("td").first).to_have_text("2")

    page.get_by_label("File").set_input_files(str(server.world / "data" / "text.jsonl"))
    page.get_by_label("Name").fill("sums")
    page.get_by_role("button", name="Upload and validate").click()
    expect(result).to_contain_text("Ready: sums — 16 valid record(s)")
    expect(page.locator("#upload-progress")).to_have_attribute("value", "100")
    expect(page.locator("#datasets-table tbody tr[data-dataset-id]")).to_have_count(2)
    shoot(page, "datasets")


def test_a_bad_form_shows_the_api_errors_beside_their_fields(page: Page, server: Server, shoot: Any) -> None:
    _open(page, server, "/new")
    _heading(page, "New job")
    expect(_field(page, "training.max_steps")).to_have_value("4000")  # the spec's defaults, from the OpenAPI schema
    expect(_field(page, "method.kd_sources")).to_have_value("selective")

    _field(page, "name").fill("bad name!")
    _field(page, "training.max_steps").fill("0")
    page.get_by_role("button", name="Submit job").click()

    expect(page.locator("#form-errors [role=alert]")).to_contain_text("problem(s)")
    expect(page.locator("#f-name-error")).to_contain_text("String should match pattern")
    expect(page.locator("#f-training-max_steps-error")).to_contain_text("greater than or equal to 1")
    expect(_field(page, "training.max_steps")).to_have_attribute("aria-invalid", "true")
    expect(page.locator('[data-field-loc="mixture.0.uri"] .field-error')).to_be_visible()
    shoot(page, "new-job-errors")


def test_submit_a_toy_job_and_watch_it_succeed(page: Page, server: Server, shoot: Any) -> None:
    world = server.world
    _open(page, server, "/new")
    _heading(page, "New job")
    _field(page, "name").fill("ui-lingudistill")
    _field(page, "student").fill(str(world / "student"))
    _field(page, "teacher").fill(str(world / "teacher"))
    page.locator("#f-mix-0-pick").select_option(label="sums (16 records)")
    expect(_field(page, "mixture.0.name")).to_have_value("sums")
    _field(page, "mixture.0.distill").check()
    page.get_by_role("button", name="Add a source").click()
    _field(page, "mixture.1.name").fill("vqa")
    _field(page, "mixture.1.uri").fill(str(world / "data" / "vqa.jsonl"))
    for loc, value in {
        "method.loss_chunk_size": "16",
        "training.max_steps": "6",
        "training.batch_size": "1",
        "training.seed": "7",
        "training.lr": "0.001",
        "training.lr_projector": "0.001",
        "training.warmup_ratio": "0",
        "training.checkpoint_every": "3",
        "training.max_seq_len": "128",
        "evaluation.gates.min_recovery": "0.05",
        "evaluation.gates.max_vision_drop": "0.5",
    }.items():
        _field(page, loc).fill(value)
    page.get_by_role("button", name="Add a language suite").click()
    _field(page, "evaluation.language.0.name").fill("sums")
    _field(page, "evaluation.language.0.uri").fill(str(world / "eval" / "language.jsonl"))
    page.get_by_role("button", name="Add a vision suite").click()
    _field(page, "evaluation.vision.0.name").fill("colours")
    _field(page, "evaluation.vision.0.uri").fill(str(world / "eval" / "vision.jsonl"))
    _field(page, "metadata").fill("team=vlm")
    shoot(page, "new-job")
    page.get_by_role("button", name="Submit job").click()

    # the job page, live: progress moves and the loss curve is drawn while it trains
    expect(page).to_have_url(re.compile(r"#/jobs/job_"))
    _heading(page, "ui-lingudistill")
    job_id = page.url.rsplit("/", 1)[-1]
    expect(page.locator("#job-status .badge")).to_have_text(re.compile("running|evaluating|succeeded"), timeout=60_000)
    expect(page.locator('#chart-loss .u-legend [data-series="loss"]')).to_be_attached(timeout=60_000)
    expect(page.locator("#job-progress")).not_to_have_attribute("value", "0")
    shoot(page, "job-running")

    # the jobs table follows the job's event stream to its end, with no reload
    page.get_by_role("link", name="Jobs", exact=True).first.click()
    _heading(page, "Jobs")
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row.locator(".badge")).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)
    expect(row.locator(".recovery-cell")).to_contain_text(re.compile("passed|gates failed"))
    shoot(page, "jobs")

    row.get_by_role("link", name="ui-lingudistill").click()
    _heading(page, "ui-lingudistill")
    expect(page.locator("#job-status .badge")).to_have_text("succeeded")
    expect(page.locator("#job-progress")).to_have_attribute("value", "100")
    for name in ("loss", "loss_ce", "loss_kd"):
        expect(page.locator(f'#chart-loss .u-legend [data-series="{name}"]')).to_have_count(1)
    expect(page.locator('#chart-sources .u-legend [data-series^="loss_ce/"]').first).to_be_attached()
    expect(page.locator("#chart-lr .u-legend [data-series]").first).to_be_attached()
    expect(page.locator("#checkpoints details.checkpoint")).to_have_count(1)  # step 3 (the last step is the model)
    expect(page.locator("#report [data-verdict]")).to_be_visible()
    expect(page.locator("#gates-table tbody tr")).to_have_count(2)
    expect(page.locator("#language-table")).to_contain_text("sums")
    expect(page.locator("#vision-table")).to_contain_text("colours")
    expect(page.locator("#report-plots img")).to_have_count(3)
    page.wait_for_function("[...document.querySelectorAll('#report-plots img')].every(i => i.naturalWidth > 0)")
    expect(page.locator("#events li[data-type=status]").first).to_contain_text(re.compile("succeeded", re.I))
    assert page.locator("#events .event-text").all_inner_texts()
    assert not [text for text in page.locator("#events .event-text").all_inner_texts() if "{" in text]  # no raw JSON
    expect(page.locator("#spec")).to_contain_text('"kd_sources": "selective"')
    expect(page.get_by_role("button", name="Cancel job")).to_be_disabled()
    _scores_are_percents(page)
    assert page.evaluate(UNLABELLED_CONTROLS) == []
    shoot(page, "job")
    _download_a_model_file(page, server, job_id)
    _explore_the_loss_chart(page)
    assert not page.js_errors


def _scores_are_percents(page: Page) -> None:
    """One number format: scores and recoveries in percent with one decimal, differences in percentage points."""
    percent, change = re.compile(r"^-?\d{1,3}\.\d%$"), re.compile(r"^([+−]?\d{1,3}\.\d pp|—)$")
    # the first suite's cells: metric, items, teacher, before, after, Δ, recovery
    cells = page.locator("#language-table tbody tr").first.locator("td")
    for column in (2, 3, 4):
        expect(cells.nth(column)).to_have_text(percent)
    expect(cells.nth(5)).to_have_text(change)
    expect(page.locator("#gates-table tbody tr").first.locator("td").first).to_have_text("5.0%")  # min_recovery 0.05
    expect(page.locator("#gates-table tbody tr").nth(1).locator("td").first).to_have_text("50.0 pp")  # max_vision_drop


def _download_a_model_file(page: Page, server: Server, job_id: str) -> None:
    """The repaired model's files download with the key, each checked against its sha256 before it is saved."""
    with server.client() as client:
        manifest = client.get(f"/v1/jobs/{job_id}/model").json()["manifest"]
    path = "config.json" if "config.json" in manifest else sorted(manifest)[0]
    model = page.locator("#model")
    expect(model.get_by_role("button", name=f"Download all {len(manifest)} files")).to_be_visible()
    row = model.locator(f'li[data-path="{path}"]')
    with page.expect_download() as download:
        row.get_by_role("link", name=path).click()
    saved = Path(download.value.path()).read_bytes()
    assert hashlib.sha256(saved).hexdigest() == manifest[path]
    expect(row.locator(".file-status")).to_have_text("✓ sha256 verified, saved")
    expect(model).to_contain_text(f"lingudistill jobs download {job_id} model/")


def _explore_the_loss_chart(page: Page) -> None:
    """What W&B users reach for: hover values, drag to zoom and double-click back, smoothing, a log axis."""
    chart = page.locator("#chart-loss")
    plot = chart.locator(".u-over")
    plot.scroll_into_view_if_needed()
    box = plot.bounding_box()
    assert box is not None
    step_value = chart.locator(".u-legend .u-series").first.locator(".u-value")
    expect(step_value).to_have_text("6")  # away from the cursor: the latest step and values
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    expect(step_value).to_have_text(re.compile(r"^[1-5]$"))  # the step under the cursor
    hovered = step_value.inner_text()
    expect(page.locator("#chart-lr .u-legend .u-series").first.locator(".u-value")).to_have_text(hovered)  # in sync
    expect(chart.locator('.u-legend [data-series="loss"] .u-value')).to_have_text(re.compile(r"^\d"))

    page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5, steps=5)
    page.mouse.up()
    reset = chart.get_by_role("button", name="Reset zoom")
    expect(reset).to_be_visible()
    plot.dblclick()
    expect(reset).to_be_hidden()

    kd = chart.locator('.u-legend [data-series="loss_kd"]')  # a legend entry hides its line, by keyboard too
    kd.focus()
    page.keyboard.press("Enter")
    expect(kd).to_have_attribute("aria-pressed", "false")
    expect(kd).to_have_class(re.compile(r"\bu-off\b"))
    page.keyboard.press("Enter")
    expect(kd).to_have_attribute("aria-pressed", "true")

    smoothing = page.get_by_label("Smoothing (EMA)")
    smoothing.focus()
    page.keyboard.press("End")
    expect(page.locator("#chart-smoothing-value")).to_have_text("0.99")
    expect(chart.locator(".u-legend .raw-line")).to_have_count(3)  # the raw values stay, faint, under the smoothed
    page.keyboard.press("Home")
    expect(chart.locator(".u-legend .raw-line")).to_have_count(0)

    with page.expect_download() as download:
        chart.get_by_role("button", name="Loss: total, CE and KD: download CSV").click()
    csv = Path(download.value.path()).read_text().splitlines()
    assert csv[0] == "step,loss,loss_ce,loss_kd" and [row.split(",")[0] for row in csv[1:]] == list("123456"), csv

    page.get_by_label("Log scale (y)").check()
    expect(chart).to_have_attribute("data-scale", "log")
    page.get_by_label("Log scale (y)").uncheck()
    expect(chart).to_have_attribute("data-scale", "linear")


def _submit_long(server: Server, name: str) -> str:
    with server.client() as client:
        response = client.post("/v1/jobs", json=api_spec(server.world, name, training=_long_training()))
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


def test_cancel_a_second_job(page: Page, server: Server, shoot: Any) -> None:
    job_id = _submit_long(server, "ui-to-cancel")
    _open(page, server, f"/jobs/{job_id}")
    _heading(page, "ui-to-cancel")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-status .badge")).to_have_text("cancelled", timeout=60_000)
    expect(page.get_by_role("button", name="Retry")).to_be_enabled()
    cancelled = page.locator("#events li[data-type=status]").first  # a sentence, whether the API wrote it or the UI
    expect(cancelled).to_contain_text(re.compile(r"^(?!.*[{}]).*cancel", re.I))
    expect(cancelled).to_have_attribute("data-level", re.compile(r"^(warning|info)$"))
    page.get_by_label("Warnings and errors only").check()
    expect(page.locator("#events li[data-level=info]").first).to_be_hidden()
    page.get_by_label("Warnings and errors only").uncheck()
    expect(page.locator("#events li[data-level=info]").first).to_be_visible()
    expect(page.locator("#checkpoints")).to_contain_text("No checkpoint was completed (one every 1000 steps)")
    expect(page.locator("#model")).to_contain_text("ended cancelled without a model")
    shoot(page, "job-cancelled")


def test_pause_and_resume_a_running_job(page: Page, server: Server) -> None:
    job_id = _submit_long(server, "ui-to-pause")
    _open(page, server, f"/jobs/{job_id}")
    _heading(page, "ui-to-pause")
    expect(page.get_by_role("button", name="Resume")).to_have_count(0)
    expect(page.locator("#job-status .badge")).to_have_text("running", timeout=JOB_TIMEOUT_MS)
    page.get_by_role("button", name="Pause").click()
    badge = page.locator("#job-status .badge")
    expect(badge).to_have_text("paused", timeout=60_000)  # via pausing, once the worker saved a checkpoint
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    expect(page.locator("#events")).to_contain_text(re.compile(r"Paused at step \d+ \(checkpoint step-\d+\)"))

    page.get_by_role("button", name="Resume").click()
    expect(badge).to_have_text(re.compile(r"^(queued|validating|running)$"))
    expect(page.get_by_role("button", name="Resume")).to_have_count(0)
    expect(page.locator("#events")).to_contain_text("Resuming from the checkpoint at step", timeout=JOB_TIMEOUT_MS)
    with server.client() as client:  # the one embedded worker is needed by the tests after this one
        client.post(f"/v1/jobs/{job_id}/cancel")
    server.wait_job(job_id, {"cancelled"}, 60)


def test_compare_lingudistill_with_plain_fine_tuning(page: Page, server: Server, shoot: Any) -> None:
    with server.client() as client:
        jobs = client.get("/v1/jobs", params={"name": "ui-lingudistill", "view": "full"}).json()["items"]
        spec = dict(jobs[0]["spec"], name="ui-baseline-ce-only")
        spec["method"] = {**spec["method"], "kd_sources": "none"}
        spec["training"] = {**spec["training"], "seed": None, "checkpoint_every": 1000}  # as the toy job: none kept
        response = client.post("/v1/jobs", json=spec)
        assert response.status_code == 201, response.text
    baseline = server.wait_job(response.json()["id"], {"succeeded", "failed"}, JOB_TIMEOUT_MS / 1000)
    assert baseline["status"] == "succeeded", baseline

    _open(page, server, f"/jobs/{baseline['id']}")  # a finished job without checkpoints still offers its model
    expect(page.locator("#checkpoints")).to_contain_text("No intermediate checkpoint was kept (one every 1000 steps)")
    expect(page.locator("#model").get_by_role("button", name=re.compile(r"^Download all \d+ files$"))).to_be_visible()

    _open(page, server, f"/compare?a={jobs[0]['id']}&b={baseline['id']}")
    _heading(page, "Compare jobs")
    report = page.locator("#compare-report")
    expect(report).to_contain_text("sums: recovery")
    expect(report).to_contain_text("Verdict")
    expect(page.locator("#compare-spec")).to_contain_text("method.kd_sources")
    expect(page.locator("#cmp-loss .u-legend [data-series=loss]")).to_have_count(2)
    kd_by_step = _legend_values_along(page, "#cmp-kd", steps=6)  # the KD term: A distils, the baseline does not
    assert all(b == "0" for _, b in kd_by_step) and any(a != "0" for a, _ in kd_by_step), kd_by_step
    mean_recovery = report.locator("tr", has_text="Mean recovery").locator("td").first
    expect(mean_recovery).to_have_text(re.compile(r"^(-?\d+\.\d%|n/a)$"))
    shoot(page, "compare")
    assert not page.js_errors


def test_a_job_with_a_control_arm_shows_the_lift_over_it(page: Page, server: Server, shoot: Any) -> None:
    with server.client() as client:
        base = client.get("/v1/jobs", params={"name": "ui-lingudistill"}).json()["items"][0]
    _open(page, server, f"/new?from={base['id']}")
    _heading(page, "New job from ui-lingudistill")
    _field(page, "name").fill("ui-with-control")
    _field(page, "training.max_steps").fill("2")
    control_box = _field(page, "evaluation.control")
    expect(control_box).not_to_be_checked()
    page.get_by_label(re.compile("^Control arm")).check()
    _field(page, "evaluation.gates.min_lift").fill("-1")
    page.get_by_role("button", name="Submit job").click()

    expect(page).to_have_url(re.compile(r"#/jobs/job_"))
    _heading(page, "ui-with-control")
    arm_link = page.locator("#arm-link a")
    expect(arm_link).to_have_text(re.compile(r"^job_"))
    control_id = arm_link.inner_text()
    expect(page.locator("#spec")).to_contain_text('"control": true')
    expect(page.locator("#job-status .badge")).to_have_text("succeeded", timeout=2 * JOB_TIMEOUT_MS)
    lift = page.locator("#method-vs-control #lift-table")
    expect(lift.locator("tbody tr")).to_have_count(3)  # sums, colours, and the mean recovery
    expect(lift.locator("tbody tr").first.locator("td").nth(4)).to_have_text(re.compile(r"^[+−]?\d+\.\d pp$"))
    expect(lift.locator("tbody tr").first.locator("td").nth(5)).to_have_text(re.compile(r" pp to .* pp$"))
    expect(lift.locator("tr", has_text="Mean recovery").locator("td").nth(5)).to_have_text(re.compile(r"( to |n/a)"))
    expect(page.locator("#gates-table")).to_contain_text("min_lift")
    shoot(page, "job-control")

    arm_link.click()
    expect(page).to_have_url(re.compile(f"#/jobs/{control_id}$"))
    _heading(page, "ui-with-control-control")
    expect(page.locator("#arm-link")).to_contain_text("This is the control arm")
    expect(page.locator("#spec")).to_contain_text('"kd_sources": "none"')
    expect(page.locator("#method-vs-control")).to_have_count(0)
    assert not page.js_errors


def _legend_values_along(page: Page, chart_id: str, steps: int) -> list[list[str]]:
    """The values the legend shows under the cursor at each step, left to right (what a user reads by hovering)."""
    plot = page.locator(f"{chart_id} .u-over")
    plot.scroll_into_view_if_needed()
    box = plot.bounding_box()
    assert box is not None
    seen = []
    for i in range(steps):
        page.mouse.move(box["x"] + min(box["width"] * i / (steps - 1), box["width"] - 1), box["y"] + box["height"] / 2)
        expect(page.locator(f"{chart_id} .u-legend .u-series").first.locator(".u-value")).to_have_text(str(i + 1))
        seen.append(page.locator(f"{chart_id} .u-legend [data-series] .u-value").all_inner_texts())
    page.mouse.move(0, 0)  # away again: the legends go back to the latest values
    return seen


def _long_training() -> dict[str, Any]:
    return {"max_steps": 100_000, "batch_size": 1, "grad_accum": 1, "checkpoint_every": 1000, "max_seq_len": 128}


def test_stays_usable_at_a_thousand_jobs_and_a_100k_step_run(page: Page, server: Server, shoot: Any) -> None:
    long_run = _seed_many_jobs(server, jobs=1000, steps=100_000)

    _open(page, server, "/jobs")
    rows = page.locator("#jobs-table tbody tr[data-job-id]")
    expect(rows).to_have_count(25)
    expect(page.locator(".recovery-cell", has_text="…")).to_have_count(0)  # each finished job's report was read
    shoot(page, "jobs-paged")
    page.get_by_role("link", name="Older →").click()
    expect(page.get_by_text("Page 2")).to_be_visible()
    expect(rows).to_have_count(25)
    expect(page.get_by_role("link", name="← Newer")).to_be_visible()

    _open(page, server, f"/jobs/{long_run}")
    _heading(page, "ui-long-run")
    expect(page.locator("#job-progress")).to_have_attribute("value", "100")
    line = page.locator('#chart-loss .u-legend [data-series="loss"]')
    expect(line).to_have_count(1)
    assert 100 <= int(line.get_attribute("data-points") or 0) <= 400  # downsampled by the API, never 100k points
    assert not page.js_errors


def _seed_many_jobs(server: Server, jobs: int, steps: int) -> str:
    """Rows as finished workers would leave them: many small jobs and one long run with every step's metrics."""
    from datetime import timedelta

    from sqlalchemy import insert

    from service.db import make_engine, make_sessionmaker, session_scope
    from service.models import Job, JobStatus, Metric, utcnow

    with server.client() as client:
        template = client.get("/v1/jobs", params={"name": "ui-lingudistill", "view": "full"}).json()["items"][0]
    engine = make_engine(server.database_url)
    now = utcnow()

    def job(name: str, n: int, total: int) -> Job:
        created = now - timedelta(minutes=n + 1)
        return Job(
            tenant_id=template["tenant_id"], name=name, status=JobStatus.succeeded, spec=template["spec"], attempt=1,
            step=total, total_steps=total, created_at=created, updated_at=created, started_at=created,
            finished_at=created,
        )  # fmt: skip

    with session_scope(make_sessionmaker(engine)) as session:
        session.add_all([job(f"bulk-{n:04d}", n, 10) for n in range(jobs)])
        long_run = job("ui-long-run", -1, steps)
        session.add(long_run)
        session.flush()
        rows = [
            {"job_id": long_run.id, "attempt": 1, "step": step, "name": name, "value": value}
            for step in range(1, steps + 1)
            for name, value in (("loss", 5.0 / step**0.3), ("loss_ce", 3.0 / step**0.2), ("loss_kd", 2.0 / step**0.4))
        ]
        session.execute(insert(Metric), rows)
        long_run_id = long_run.id
    engine.dispose()
    return long_run_id
