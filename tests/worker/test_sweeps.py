"""Issue 13's sweep end to end on real workers, Postgres, Redis and S3: `lingudistill sweep submit` submits three arms
and a control through the REST API, the arms train, the worker finishes the sweep when the last arm ends (best arm,
lift over the control with an interval), and the retried step (`--wait --junit --download`, same idempotency key)
follows the same sweep to the best arm's verdict and model."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from service.app import create_app
from service.client.cli import sweep
from service.db import session_scope
from service.keys.service import create_key
from service.models import Sweep
from tests.client.live import LiveServer
from tests.engine.test_pipeline import _write_suites as write_suites
from tests.worker.conftest import Stack, job_spec, wait_until


def sweep_row(stack: Stack, sweep_id: str) -> Sweep:
    with stack.sessions() as session:
        row = session.get(Sweep, sweep_id)
        assert row is not None
        return row


def test_a_sweep_with_a_control_runs_to_the_end_and_names_its_best_arm_with_a_lift(
    stack: Stack, tiny_world: Path, private_queue: str, tmp_path: Path
) -> None:
    stack.worker("--concurrency=2", queue=private_queue)
    base = job_spec(tiny_world, private_queue, max_steps=4, checkpoint_every=4)
    base["name"] = "sweep-e2e"
    write_suites(tiny_world)  # data/language.jsonl (sums) and data/vision.jsonl (colours, with the world's images)
    base["evaluation"] = {
        "language": [{"name": "sums", "uri": str(tiny_world / "data" / "language.jsonl")}],
        "vision": [{"name": "colours", "uri": str(tiny_world / "data" / "vision.jsonl")}],
        "gates": {"max_vision_drop": 1.0},
    }
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(
        yaml.safe_dump(
            {
                "base": base,
                "grid": {"method.kd_weight": [0.5, 1.0, 2.0]},  # three arms and the control
                "control": True,
                "select": {"metric": "language.sums.after", "mode": "max"},
            }
        )
    )
    live = LiveServer(create_app(stack.settings, sessions=stack.sessions, storage=stack.storage)).start()
    try:
        with session_scope(stack.sessions) as session:
            key = create_key(session, "sweep-e2e").key
        connection = ["--idempotency-key", "sweep-e2e", "--server", live.url, "--api-key", key]
        submitted = CliRunner().invoke(sweep, ["submit", str(sweep_file), *connection], catch_exceptions=False)
        assert submitted.exit_code == 0, submitted.output
        sweep_id = submitted.stdout.strip()
        # nobody reads the sweep meanwhile: the worker's hook, when the last arm ends, is what finishes it
        wait_until(lambda: sweep_row(stack, sweep_id).finished_at, 600, "the sweep to be finished by the worker")

        # the step retried with --wait: the same key follows the same sweep to its verdict, files and model
        junit, model = tmp_path / "junit.xml", tmp_path / "best-model"
        args = ["submit", str(sweep_file), "--wait", "--junit", str(junit), "--download", str(model)]
        result = CliRunner().invoke(sweep, [*args, "--poll-interval", "1", *connection], catch_exceptions=False)

        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == sweep_id and "already submitted" in result.stderr
        with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {key}"}) as api:
            done = api.get(f"/v1/sweeps/{sweep_id}").json()
            report = api.get(f"/v1/sweeps/{sweep_id}/report").json()
            loss_plot = api.get(f"/v1/sweeps/{sweep_id}/report/plots/loss.svg")
    finally:
        live.stop()

    assert done["status"] == "succeeded", done
    assert [a["label"] for a in done["arms"]] == [
        "method.kd_weight=0.5",
        "method.kd_weight=1.0",
        "method.kd_weight=2.0",
        "control",
    ]
    assert {a["status"] for a in done["arms"]} == {"succeeded"}
    arms = [a for a in done["arms"] if not a["is_control"]]
    best = max(arms, key=lambda a: a["metric"])  # the first of equals, as the sweep chooses
    assert done["best_job_id"] == best["job_id"] and done["best_arm"] == best["label"]
    lift = done["lift"]
    assert lift["control_job_id"] == done["arms"][-1]["job_id"] and lift["error"] is None
    [sums] = [row for row in lift["suites"] if row["name"] == "sums"]
    control_after = done["arms"][-1]["metric"]
    assert sums["estimate"] == pytest.approx(best["metric"] - control_after)
    assert sums["low"] <= sums["estimate"] <= sums["high"]
    assert done["passed"] is True and [g["name"] for g in done["gates"]] == ["max_vision_drop"]

    cases = ET.parse(junit).getroot().findall(".//testcase")
    assert [c.get("name") for c in cases] == [a["label"] for a in done["arms"]] + ["max_vision_drop"]
    assert not any(c.find("failure") is not None for c in cases)
    assert (model / "config.json").is_file() and list(model.glob("*.safetensors"))
    assert [row["best"] for row in report["rows"]] == [a["job_id"] == best["job_id"] for a in done["arms"]]
    assert loss_plot.status_code == 200 and all(a["label"] in loss_plot.text for a in done["arms"])
