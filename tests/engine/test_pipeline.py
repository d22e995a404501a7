"""The whole job on the tiny world: validate, score before, train with periodic evaluation, score after, report."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lingudistill.cli import main
from lingudistill.pipeline import run_job
from lingudistill.recipe import TrainingCallback
from lingudistill.spec import EvalSuite, load_spec
from tests.engine.conftest import COLOURS, NUMBERS


def _write_suites(folder) -> None:
    language = [
        {"question": f"what is {NUMBERS[a]} plus {NUMBERS[b]} ?", "choices": list(NUMBERS[:6]), "answer": a + b}
        for a in range(3)
        for b in range(3)
    ]
    vision = [
        {
            "question": "what colour is the square ?",
            "choices": list(COLOURS),
            "answer": i % 4,
            "image": f"images/{i}.png",
        }
        for i in range(8)
    ]
    for name, items in (("language", language), ("vision", vision)):
        (folder / "data" / f"{name}.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))


def test_the_job_scores_every_n_steps_and_writes_the_report(tiny_job):
    _write_suites(tiny_job.parent)
    spec = yaml.safe_load(tiny_job.read_text())
    spec["evaluation"] = {
        "language": [{"name": "sums", "uri": "data/language.jsonl"}],
        "vision": [{"name": "colours", "uri": "data/vision.jsonl"}],
        "every": 2,
        "gates": {"max_vision_drop": 1.0},
    }
    tiny_job.write_text(yaml.safe_dump(spec))
    out = tiny_job.parent / "out"
    result = run_job(load_spec(tiny_job), out)

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scored = [r["step"] for r in records if "eval/sums" in r and "eval/colours" in r]
    assert scored == [2, 4], "every 2 steps, the last step being the final evaluation's"
    report = json.loads((out / "report.json").read_text())
    assert report == result.report
    assert {row["name"] for row in report["language"]["suites"]} == {"sums"}
    assert {row["name"] for row in report["vision"]["suites"]} == {"colours"}
    assert [gate["name"] for gate in report["gates"]] == ["max_vision_drop"]
    assert report["provenance"]["datasets"]["text"]["sha256"]
    assert (out / "report.md").read_text().startswith("# Recovery report")
    assert (out / "eval_before.json").is_file() and (out / "loss.svg").stat().st_size > 0


def test_the_report_records_the_submitted_uris_not_local_copies(tiny_job):
    """The worker trains on local copies of dataset:// sources; provenance keeps what the user submitted."""
    _write_suites(tiny_job.parent)
    spec = load_spec(tiny_job)
    spec.evaluation.language = [EvalSuite(name="sums", uri=str(tiny_job.parent / "data" / "language.jsonl"))]
    origin = spec.model_copy(
        update={"mixture": [s.model_copy(update={"uri": f"dataset://ds_{s.name}"}) for s in spec.mixture]}
    )
    result = run_job(spec, tiny_job.parent / "out", origin=origin)
    provenance = result.report["provenance"]
    assert provenance["datasets"]["text"]["uri"] == "dataset://ds_text"
    assert provenance["datasets"]["text"]["sha256"], "the hash is of the data actually read"
    assert provenance["spec"]["mixture"][1]["uri"] == "dataset://ds_vqa"


def test_train_resume_of_a_spec_without_a_seed_keeps_the_recorded_seed(tiny_job):
    """`lingudistill train --resume` continues the run it resumes: same seed in spec.json, same remaining losses."""
    spec = yaml.safe_load(tiny_job.read_text())
    del spec["training"]["seed"]
    spec["training"].update(max_steps=4, checkpoint_every=2)
    tiny_job.write_text(yaml.safe_dump(spec))
    out = tiny_job.parent / "out"
    command = ["train", str(tiny_job), "--output", str(out)]

    first = CliRunner().invoke(main, command)
    assert first.exit_code == 0, first.output
    seed = json.loads((out / "spec.json").read_text())["training"]["seed"]
    before = _losses(out)
    resumed = CliRunner().invoke(main, [*command, "--resume"])  # from the checkpoint at step 2

    assert resumed.exit_code == 0, resumed.output
    assert f"seed {seed}," in resumed.output
    assert json.loads((out / "spec.json").read_text())["training"]["seed"] == seed
    after = _losses(out)
    assert sorted(after) == [1, 2, 3, 4] and after == before


class PauseAt(TrainingCallback):
    """Asks to pause once training reached `step`, as the worker's PAUSE file does; records the checkpoints saved."""

    def __init__(self, step: int) -> None:
        self.step, self.seen, self.saved = step, 0, []

    def on_step(self, record: dict) -> None:
        self.seen = record["step"]

    def on_checkpoint(self, step: int, folder: Path, manifest: dict) -> None:
        self.saved.append(step)

    def should_pause(self) -> bool:
        return self.seen >= self.step


def test_a_pause_checkpoints_the_step_it_stops_at_and_the_resume_is_exact(tiny_job):
    spec = load_spec(tiny_job)
    training = spec.training.model_copy(update={"max_steps": 6, "checkpoint_every": 2})
    spec = spec.model_copy(update={"training": training})
    run_job(spec, tiny_job.parent / "whole")

    out, first, second = tiny_job.parent / "paused", PauseAt(3), PauseAt(4)
    paused = run_job(spec, out, callbacks=[first]).train
    assert (paused.stopped_early, paused.steps, first.saved) == (True, 3, [2, 3])  # 3: the pause's checkpoint
    again = run_job(spec, out, resume=True, callbacks=[second]).train
    assert (again.steps, second.saved) == (4, [4])  # paused at a periodic checkpoint: not saved twice

    resumed = run_job(spec, out, resume=True).train
    assert not resumed.stopped_early and resumed.steps == 6
    assert _losses(out) == pytest.approx(_losses(tiny_job.parent / "whole"), rel=1e-5)


def _losses(out) -> dict[int, float]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records}


def test_lingudistill_has_no_import_circle() -> None:
    """Every import in lingudistill/, those inside functions included, points one way (issue 14)."""
    graph = _import_graph(Path(__file__).parents[2] / "lingudistill")
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, f"import circle: {' -> '.join([*path[path.index(module) :], module])}"
        if module in done:
            return
        for imported in graph[module]:
            visit(imported, [*path, module])
        done.add(module)

    for module in graph:
        visit(module, [])


def _import_graph(package: Path) -> dict[str, set[str]]:
    modules = {}
    for path in package.rglob("*.py"):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from package import submodule` imports the submodule, not (only) the package's own code
                submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules.keys()
                targets = submodules or {node.module}
            elif isinstance(node, ast.Import):
                targets = {alias.name for alias in node.names}
            else:
                continue
            graph[name] |= {target for target in targets if target in modules and target != name}
    return graph
