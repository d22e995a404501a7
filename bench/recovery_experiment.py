"""LinguDistill against plain fine-tuning in a world: the same data, steps and seeds, scored item by item.

    python bench/recovery_experiment.py WORLD_DIR --out OUT [--seeds 0 1 2] [--every 10] [--steps N]

For each seed, two jobs run through `lingudistill.pipeline.run_job` on WORLD_DIR/spec.yaml: the spec as built
(arm `lingudistill`) and the same spec with `kd_sources: none` (arm `control`: cross-entropy only, no teacher).
The spec's `evaluation.every` is set to --every, so each job's report carries its own curves; beside it, a
callback records which items of every language suite the student gets right (acc_norm, as the engine scores)
at step 0 and every --every steps, the last step included. Suites: the spec's language suites, plus
WORLD_DIR/eval/taught.jsonl when it exists (facts the recovery text states: the old, leaky measure).

Recovery at a step = (acc - before) / (teacher - before) on the suite's items. The difference between the
arms has a 95% interval from a paired bootstrap: seeds and items are resampled together (the same resampled
items for both arms and for teacher and before), 2000 times. Runs already in OUT/runs are reused, so an
interrupted experiment resumes; `--report-only` writes the tables and plots from them.

Output: OUT/runs/<arm>-seed<n>.json (per-item hits per step), OUT/results.md (tables), OUT/<suite>.svg (curves).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lingudistill.data.records import Record
from lingudistill.evaluation.plots import line_chart
from lingudistill.evaluation.scoring import Scorer, pick_choice
from lingudistill.evaluation.suites import EvalItem, load_suite
from lingudistill.models.loading import load_teacher
from lingudistill.pipeline import run_job
from lingudistill.recipe import Recipe, TrainingCallback
from lingudistill.spec import EvalSuite, JobSpec, load_spec

ARMS = {"lingudistill": None, "control": "none"}
BOOTSTRAP = 2000


# --- scoring items ------------------------------------------------------------------------------------------------
def item_hits(scorer: Scorer, items: Sequence[EvalItem]) -> list[int]:
    """1 where the model's length-normalised best choice is the answer (the engine's acc_norm), per item."""
    records, owners = [], []
    for n, item in enumerate(items):
        for choice in item.choices or ():
            records.append(_record(item, choice))
            owners.append(n)
    logliks = scorer.loglikelihoods(records, desc="items")
    per_item: list[list[float]] = [[] for _ in items]
    for n, value in zip(owners, logliks, strict=True):
        per_item[n].append(value)
    hits = []
    for item, scores in zip(items, per_item, strict=True):
        normalised = [s / max(len(c), 1) for s, c in zip(scores, item.choices or (), strict=True)]
        hits.append(int(pick_choice(normalised) == item.answer))
    return hits


def _record(item: EvalItem, answer: str) -> Record:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": item.question}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]
    return Record(messages=messages, images=(), source="eval", origin=item.origin)


class ItemScores(TrainingCallback):
    """Per-item hits of the student on each suite at step 0 and every `every` steps, the last step included."""

    def __init__(self, suites: dict[str, list[EvalItem]], every: int, max_steps: int, batch_size: int) -> None:
        self.suites, self.every, self.max_steps, self.batch_size = suites, every, max_steps, batch_size
        self.hits: dict[int, dict[str, list[int]]] = {}
        self.scorer: Scorer | None = None

    def on_train_begin(self, recipe: Recipe) -> None:
        student = recipe.student
        self.scorer = Scorer(student.model, student.adapter, student.processor, batch_size=self.batch_size)
        self._score(0)

    def on_step(self, record: dict[str, Any]) -> None:
        step = record["step"]
        if step % self.every == 0 or step == self.max_steps:
            self._score(step)

    def _score(self, step: int) -> None:
        assert self.scorer is not None
        self.hits[step] = {name: item_hits(self.scorer, items) for name, items in self.suites.items()}


# --- running the arms ---------------------------------------------------------------------------------------------
def language_suites(world: Path, spec: JobSpec) -> dict[str, list[EvalItem]]:
    suites = {suite.name: load_suite(suite) for suite in spec.evaluation.language}
    taught = world / "eval" / "taught.jsonl"
    if taught.exists():
        suites["taught"] = load_suite(EvalSuite(name="taught", uri=str(taught)))
    return suites


def arm_spec(world: Path, arm: str, seed: int, every: int, steps: int | None) -> JobSpec:
    """WORLD/spec.yaml for one arm and seed: the control only turns KD off; steps and data are the same."""
    raw = load_spec(world / "spec.yaml").model_dump(mode="json")
    if ARMS[arm] is not None:
        raw["method"]["kd_sources"] = ARMS[arm]
    raw["training"]["seed"] = seed
    raw["training"]["checkpoint_every"] = 10_000_000  # the experiment needs no checkpoints
    if steps is not None:
        raw["training"]["max_steps"] = steps
    raw["evaluation"]["every"] = every
    raw["name"] = f"{raw['name']}-{arm}-seed{seed}"
    return JobSpec.model_validate(raw)


def run_arm(world: Path, out: Path, arm: str, seed: int, every: int, steps: int | None) -> dict[str, Any]:
    path = out / "runs" / f"{arm}-seed{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    spec = arm_spec(world, arm, seed, every, steps)
    suites = language_suites(world, spec)
    scores = ItemScores(suites, every, spec.training.max_steps, spec.evaluation.batch_size)
    started = time.monotonic()
    result = run_job(spec, out / "jobs" / f"{arm}-seed{seed}", callbacks=[scores])
    assert result.report is not None
    run = {
        "arm": arm,
        "seed": seed,
        "steps": spec.training.max_steps,
        "seconds": round(time.monotonic() - started, 1),
        "hits": {str(step): hits for step, hits in sorted(scores.hits.items())},
        "vision": result.report["vision"]["average"],
        "report_language": result.report["language"]["average"],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run))
    return run


def teacher_hits(world: Path, out: Path, batch_size: int) -> dict[str, list[int]]:
    path = out / "teacher.json"
    if path.exists():
        return json.loads(path.read_text())
    spec = load_spec(world / "spec.yaml")
    teacher = load_teacher(spec.teacher)
    scorer = Scorer(teacher.model, None, teacher.tokenizer, batch_size=batch_size)
    hits = {name: item_hits(scorer, items) for name, items in language_suites(world, spec).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(hits))
    return hits


# --- statistics ---------------------------------------------------------------------------------------------------
def recovery(teacher: float, before: float, after: float) -> float:
    return (after - before) / (teacher - before) if teacher > before else float("nan")


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def arm_recovery(runs: list[dict[str, Any]], teacher: list[int], suite: str, step: str, items: list[int]) -> float:
    """Mean over `runs` of the recovery on `items` (indices, with repeats) at `step`."""
    t = mean([teacher[i] for i in items])
    values = []
    for run in runs:
        before, after = run["hits"]["0"][suite], run["hits"][step][suite]
        values.append(recovery(t, mean([before[i] for i in items]), mean([after[i] for i in items])))
    return mean(values)


def paired_bootstrap(
    method: list[dict[str, Any]], control: list[dict[str, Any]], teacher: list[int], suite: str, step: str
) -> tuple[float, float, float]:
    """Recovery of method minus control, and its 95% interval: seeds and items resampled together."""
    rng = random.Random(0)
    n_items, seeds = len(teacher), list(range(len(method)))
    everything = list(range(n_items))
    point = arm_recovery(method, teacher, suite, step, everything) - arm_recovery(
        control, teacher, suite, step, everything
    )
    draws = []
    for _ in range(BOOTSTRAP):
        items = [rng.randrange(n_items) for _ in range(n_items)]
        picked = [rng.choice(seeds) for _ in seeds]
        diff = arm_recovery([method[s] for s in picked], teacher, suite, step, items) - arm_recovery(
            [control[s] for s in picked], teacher, suite, step, items
        )
        if diff == diff:  # a resample where teacher <= before has no recovery: skip it
            draws.append(diff)
    draws.sort()
    return point, draws[int(0.025 * len(draws))], draws[int(0.975 * len(draws)) - 1]


# --- the report ---------------------------------------------------------------------------------------------------
def write_report(out: Path, world: Path, runs: list[dict[str, Any]], teacher: dict[str, list[int]]) -> str:
    by_arm = {arm: sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["seed"]) for arm in ARMS}
    method, control = by_arm["lingudistill"], by_arm["control"]
    assert [r["seed"] for r in method] == [r["seed"] for r in control], "both arms need the same seeds"
    steps = sorted({int(s) for r in runs for s in r["hits"]} - {0})
    lines = [f"world: `{world}`; seeds {[r['seed'] for r in method]}; {method[0]['steps']} steps per job", ""]
    for suite in teacher:
        everything = list(range(len(teacher[suite])))
        t, before = mean(teacher[suite]), mean(method[0]["hits"]["0"][suite])
        lines += [
            f"### suite `{suite}` ({len(everything)} items): teacher {t:.3f}, student before {before:.3f}",
            "",
            "| step | LinguDistill recovery (per seed) | control recovery (per seed) | difference [95% CI] |",
            "|---|---|---|---|",
        ]
        for step in steps:
            key = str(step)
            if not all(key in r["hits"] for r in runs):
                continue
            per_seed = {
                arm: [arm_recovery([r], teacher[suite], suite, key, everything) for r in by_arm[arm]] for arm in ARMS
            }
            diff, low, high = paired_bootstrap(method, control, teacher[suite], suite, key)
            cells = [
                f"{mean(v):.3f} ({', '.join(f'{x:.2f}' for x in v)})"
                for v in (per_seed["lingudistill"], per_seed["control"])
            ]
            lines.append(f"| {step} | {cells[0]} | {cells[1]} | {diff:+.3f} [{low:+.3f}, {high:+.3f}] |")
        lines.append("")
        series = {
            f"{arm} (mean of {len(by_arm[arm])} seeds)": [
                (int(k), arm_recovery(by_arm[arm], teacher[suite], suite, k, everything))
                for k in sorted(by_arm[arm][0]["hits"], key=int)
            ]
            for arm in ARMS
        }
        chart = line_chart(series, title=f"recovery on {suite}", x_label="step", y_label="recovery")
        (out / f"{suite}.svg").write_text(chart)
    lines += ["| arm | seed | vision before | vision after | seconds |", "|---|---|---|---|---|"]
    for arm in ARMS:
        for r in by_arm[arm]:
            v = r["vision"]
            lines.append(f"| {arm} | {r['seed']} | {v['before']:.3f} | {v['after']:.3f} | {r['seconds']} |")
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("world", type=Path, help="a built world: WORLD/spec.yaml and its files")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--every", type=int, default=10, help="score the items every N steps")
    parser.add_argument("--steps", type=int, default=None, help="max_steps of each job (default: the spec's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--report-only", action="store_true", help="tables and plots from OUT/runs only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    world, out = args.world.resolve(), args.out.resolve()
    batch_size = load_spec(world / "spec.yaml").evaluation.batch_size
    teacher = teacher_hits(world, out, batch_size)
    runs = []
    for seed in args.seeds:
        for arm in ARMS:
            if not args.report_only or (out / "runs" / f"{arm}-seed{seed}.json").exists():
                runs.append(run_arm(world, out, arm, seed, args.every, args.steps))
                print(f"{arm} seed {seed}: done ({runs[-1]['seconds']} s)", flush=True)
    print(write_report(out, world, runs, teacher))


if __name__ == "__main__":
    main()
