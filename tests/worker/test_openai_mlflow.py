"""Issue 17's whole path: a toy job submitted through the official `openai` package trains on a real worker with
an MLflow integration, and its run is visible through MLflow's own client with metrics for every step."""

from __future__ import annotations

from pathlib import Path

import openai

from service.app import create_app
from service.db import session_scope
from service.keys.service import create_key
from tests.client.live import LiveServer
from tests.test_trackers import MlflowServer, mlflow_client
from tests.worker.conftest import Stack, wait_until


def test_a_toy_job_from_the_openai_client_logs_every_step_to_mlflow(
    stack: Stack, tiny_world: Path, private_queue: str, tmp_path: Path
) -> None:
    tracking = MlflowServer(tmp_path).start()
    stack.worker(queue=private_queue, MLFLOW_TRACKING_URI=tracking.url)  # the operator's setting, not the spec's
    live = LiveServer(create_app(stack.settings, sessions=stack.sessions, storage=stack.storage)).start()
    try:
        with session_scope(stack.sessions) as session:
            key = create_key(session, "openai-e2e").key
        ai = openai.OpenAI(base_url=f"{live.url}/openai/v1", api_key=key, max_retries=0)
        with (tiny_world / "data" / "text.jsonl").open("rb") as text:
            training = ai.files.create(file=text, purpose="fine-tune")
        method = {
            "type": "lingudistill",
            "lingudistill": {
                "teacher": str(tiny_world / "teacher"),
                "hyperparameters": {
                    "max_steps": 6,
                    "batch_size": 1,
                    "grad_accum": 1,
                    "lr": 1e-3,
                    "warmup_ratio": 0,
                    "max_seq_len": 128,
                    "loss_chunk_size": 16,
                },
                "resources": {"queue": private_queue},
            },
        }
        job = ai.fine_tuning.jobs.create(
            model=str(tiny_world / "student"),
            training_file=training.id,
            method=method,
            integrations=[{"type": "mlflow", "mlflow": {"experiment": "openai-e2e"}}],
        )
        finished = wait_until(
            lambda: (j := ai.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed") and j, 180, "the job"
        )
        assert finished.status == "succeeded", finished.error
        [integration] = finished.integrations or []
        assert (integration.type, integration.mlflow) == ("mlflow", {"experiment": "openai-e2e"})
        links = [e for e in ai.fine_tuning.jobs.list_events(job.id, limit=100) if e.data.get("tracker")]
        assert links and links[0].data["tracker"]["url"].startswith(tracking.url)

        client = mlflow_client(tracking.url)
        [run] = client.search_runs([client.get_experiment_by_name("openai-e2e").experiment_id])
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4, 5, 6]
        assert run.info.status == "FINISHED" and run.data.params["training.max_steps"] == "6"
        assert run.info.run_id == links[0].data["tracker"]["run_id"]
    finally:
        live.stop()
        tracking.stop()
