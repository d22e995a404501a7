"""The sweep page in a real browser: a sweep of two arms and a control runs on the embedded worker, and its page
shows the arms table (sortable), the best arm and the control highlighted, the lift, and the loss curves overlaid.
Runs after test_ui.py (file order) in the same tab, or alone."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

from tests.ui.conftest import Server, api_spec
from tests.ui.test_ui import UNLABELLED_CONTROLS

SWEEP_TIMEOUT_MS = 300_000


def test_a_sweep_page_shows_its_arms_sortable_with_the_best_and_the_control_highlighted(
    page: Page, server: Server, shoot: Any
) -> None:
    evaluation = {
        "language": [{"name": "sums", "uri": str(server.world / "eval" / "language.jsonl")}],
        "vision": [{"name": "colours", "uri": str(server.world / "eval" / "vision.jsonl")}],
    }
    body = {
        "base": api_spec(server.world, "ui-sweep", evaluation=evaluation),
        "grid": {"method.kd_weight": [0.5, 1, 2]},  # three arms and the control
        "control": True,
        "select": {"metric": "language.sums.after", "mode": "max"},
    }
    with server.client() as client:
        response = client.post("/v1/sweeps", json=body)
        assert response.status_code == 201, response.text
        sweep_id = response.json()["id"]

    page.goto(f"{server.url}/ui/#/sweeps")
    page.evaluate("key => sessionStorage.setItem('lingudistill.apiKey', key)", server.key)  # logged in, or alone
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sweeps")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Sweeps").click()
    page.locator(f'#sweeps-table tr[data-sweep-id="{sweep_id}"]').get_by_role("link", name="ui-sweep").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sweep ui-sweep")
    expect(page.locator("#sweep-status .badge")).to_have_text("succeeded", timeout=SWEEP_TIMEOUT_MS)

    with server.client() as client:
        sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
    rows = page.locator("#arms-table tbody tr")
    expect(rows).to_have_count(4)
    best = page.locator("#arms-table tr.arm-best")
    expect(best).to_have_count(1)
    expect(best).to_have_attribute("data-job-id", sweep["best_job_id"])
    expect(best.locator(".tag-best")).to_have_text("best")
    control = page.locator("#arms-table tr.arm-control")
    expect(control).to_have_attribute("data-arm", "control")
    expect(control.locator(".tag-control")).to_have_text("control")
    expect(page.locator("#best-arm")).to_have_text(sweep["best_arm"])
    expect(page.locator("#sweep-lift")).to_contain_text("sums")
    expect(page.locator("#sweep-loss .u-legend [data-series]")).to_have_count(4)
    expect(page.get_by_role("heading", level=1)).to_be_focused()  # as on every page: focus starts at the heading
    assert page.evaluate(UNLABELLED_CONTROLS) == []

    arm_header = page.locator('#arms-table th[data-column="arm"]')
    arm_header.get_by_role("button").click()
    expect(arm_header).to_have_attribute("aria-sort", "ascending")
    labels = sorted(arm["label"] for arm in sweep["arms"])
    expect(rows.locator("th code")).to_have_text(labels)
    arm_header.get_by_role("button").click()
    expect(arm_header).to_have_attribute("aria-sort", "descending")
    expect(rows.locator("th code")).to_have_text(labels[::-1])
    loss_header = page.locator('#arms-table th[data-column="loss_last"]')
    loss_header.get_by_role("button").click()
    expect(loss_header).to_have_attribute("aria-sort", "descending")
    losses = [float(text) for text in rows.locator("td:nth-child(6)").all_inner_texts()]
    assert losses == sorted(losses, reverse=True), losses

    rows.filter(has=page.locator(".tag-control")).get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("ui-sweep-control")
    expect(page.locator("#job-sweep")).to_contain_text("arm control of its sweep")
    page.locator("#job-sweep").get_by_role("link", name="its sweep").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sweep ui-sweep")
    expect(page.locator("#arms-table tr.arm-best")).to_have_count(1)
    shoot(page, "sweep")
    assert not page.js_errors
