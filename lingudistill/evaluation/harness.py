"""Optional: lm-evaluation-harness tasks (ARC, HellaSwag, MMLU, or task YAMLs of your own) as language suites.

A spec's `evaluation.harness` names the tasks; the job scores them on the teacher, the student before and the
student after, exactly where it scores the JSONL language suites, and each task becomes one SuiteScore and one row
of the report. This needs the `lm_eval` package (`pip install 'lingudistill[eval]'`) and the tasks' data: a local
task reads local files, a built-in task downloads its data set from the Hugging Face hub. Nothing in the engine
needs it otherwise.

The harness scores the task's raw text (no chat template), as its published numbers are. A VLM student is scored
through its own forward on text alone (`model(input_ids)`), the teacher as the causal LM it is.

Primary metric: acc_norm when the task reports it, else acc, else exact_match, else the first metric the harness
marks higher-is-better (recovery assumes higher is better); a group scores by its aggregate. n_items is the number
of documents scored: the harness's effective sample count, summed over a group's tasks.

Per-item scores (for the lift over a control arm): the harness's logged samples, one per document, on the primary
metric, keyed by the document's id (`task:doc_id` in a group). They are kept only when their mean is the task's
score; a corpus-level metric (BLEU, F1 over the corpus) or a group not weighted by size has no per-item scores,
so its lift has an estimate but no interval.

Vision suites stay with the engine's own scorer (lmms-eval is not wired in: its model API is per-family).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from lingudistill.errors import UserInputError
from lingudistill.evaluation.scores import SuiteKind, SuiteScore
from lingudistill.spec import HarnessSpec, SpecError, local_path

PREFERRED_METRICS = ("acc_norm", "acc", "exact_match")


class HarnessUnavailable(UserInputError, RuntimeError):
    """lm-evaluation-harness is not installed."""


def harness_available() -> bool:
    try:
        _harness()
    except HarnessUnavailable:
        return False
    return True


def check_harness(harness: HarnessSpec) -> None:
    """Before any model runs: lm_eval imports, include_path is a folder, and every task name is known.

    Raises HarnessUnavailable (the worker lacks the package) or SpecError (the spec names what does not exist).
    """
    _harness()
    task_manager(harness.include_path, harness.tasks)


def evaluate_harness(
    harness: HarnessSpec | None, model: Any, tokenizer: Any, *, batch_size: int
) -> dict[str, SuiteScore]:
    """The spec's harness tasks on one model, {task: SuiteScore}; {} when the spec names none."""
    if harness is None:
        return {}
    return evaluate_harness_tasks(
        harness.tasks, model, tokenizer, batch_size=batch_size, include_path=harness.include_path, limit=harness.limit
    )


def evaluate_harness_tasks(
    tasks: Sequence[str],
    model: Any,
    tokenizer: Any,
    *,
    batch_size: int,
    kind: SuiteKind = "language",
    include_path: str | None = None,
    limit: int | None = None,
) -> dict[str, SuiteScore]:
    """Run lm-evaluation-harness `tasks` on an in-memory HF model (a causal LM or a VLM); {task: SuiteScore}.

    The model's train/eval mode is restored after, and the global random state is left alone (the harness would
    otherwise reseed python, numpy and torch in the middle of training).
    """
    simple_evaluate, _, _ = _harness()
    manager = task_manager(include_path, tasks)
    was_training = model.training
    try:
        output = simple_evaluate(
            model=harness_model(model, tokenizer, batch_size=batch_size),
            tasks=list(tasks),
            task_manager=manager,
            limit=limit,
            log_samples=True,  # per-document scores, for the lift over a control arm
            bootstrap_iters=0,  # no standard errors: the report does not show them
            random_seed=None,
            numpy_random_seed=None,
            torch_random_seed=None,
        )
    finally:
        model.train(was_training)
    return {task: _suite_score(task, kind, output) for task in tasks}


def harness_model(model: Any, tokenizer: Any, *, batch_size: int) -> Any:
    """The harness's HFLM around an in-memory model, on the model's device.

    HFLM gets a copy of the tokenizer: it sets a missing pad token on the one it is given, and the engine's
    tokenizer must stay as it was.
    """
    _, hflm, _ = _harness()
    return hflm(pretrained=model, tokenizer=copy.deepcopy(tokenizer), backend="causal", batch_size=batch_size)


def task_manager(include_path: str | None, tasks: Sequence[str]) -> Any:
    """The harness's task index that knows every one of `tasks`, built once per process; SpecError otherwise.

    When include_path holds all the tasks, only it is indexed: indexing the ~15,000 built-in tasks takes seconds.
    """
    return _task_manager(include_path, tuple(tasks))


@lru_cache(maxsize=8)
def _task_manager(include_path: str | None, tasks: tuple[str, ...]) -> Any:
    _, _, manager_class = _harness()
    folder = None
    if include_path is not None:
        folder = local_path(include_path)
        if not folder.is_dir():
            raise SpecError(f"evaluation.harness.include_path {include_path}: not a folder")
        local = manager_class(include_path=str(folder), include_defaults=False)
        if all(task in local.all_tasks for task in tasks):
            return local
    manager = manager_class(include_path=str(folder) if folder else None)
    unknown = [task for task in tasks if task not in manager.all_tasks]
    if unknown:
        where = f"{folder} or the harness's built-in tasks" if folder else "the harness's built-in tasks"
        raise SpecError(f"evaluation.harness: no task named {', '.join(unknown)} in {where}")
    tags = [task for task in tasks if task in manager.all_tags]
    if tags:
        raise SpecError(
            f"evaluation.harness: {', '.join(tags)} is a tag (tasks without one aggregate score); "
            "name its tasks or a group"
        )
    return manager


def _suite_score(task: str, kind: SuiteKind, output: dict[str, Any]) -> SuiteScore:
    values = output["results"][task]
    metrics = {
        _metric_name(key): float(value)
        for key, value in values.items()
        if "," in key and not key.split(",")[0].endswith("_stderr") and isinstance(value, int | float)
    }
    higher_is_better = output.get("higher_is_better", {}).get(task, {})
    metric = _primary_metric(task, metrics, higher_is_better)
    n_items = sum(output["n-samples"][leaf]["effective"] for leaf in _leaf_tasks(task, output["group_subtasks"]))
    items = _item_scores(task, metric, metrics[metric], output)
    return SuiteScore(task, kind, metric, metrics[metric], metrics, int(n_items), items)


def _item_scores(task: str, metric: str, score: float, output: dict[str, Any]) -> dict[str, float] | None:
    """{doc key: score on `metric`} from the logged samples; None unless they are numbers that average to `score`."""
    name, _, filter_key = metric.partition(",")
    leaves = _leaf_tasks(task, output["group_subtasks"])
    items: dict[str, float] = {}
    for leaf in leaves:
        for sample in output.get("samples", {}).get(leaf, []):
            if sample.get("filter") != (filter_key or "none"):
                continue
            value = sample.get(name)
            if not isinstance(value, int | float):  # a corpus-level metric logs tuples or strings per document
                return None
            key = str(sample["doc_id"]) if leaves == [task] else f"{leaf}:{sample['doc_id']}"
            items[key] = float(value)
    if not items or abs(sum(items.values()) / len(items) - score) > 1e-9:
        return None
    return items


def _metric_name(key: str) -> str:
    """'acc,none' -> 'acc'; 'exact_match,strict-match' keeps its filter, which tells two results apart."""
    metric, _, filter_name = key.partition(",")
    return metric if filter_name == "none" else key


def _primary_metric(task: str, metrics: dict[str, float], higher_is_better: dict[str, bool]) -> str:
    candidates = [name for name in metrics if higher_is_better.get(name.split(",")[0], False)]
    for preferred in PREFERRED_METRICS:
        for name in candidates:
            if name.split(",")[0] == preferred:
                return name
    if candidates:
        return candidates[0]
    raise SpecError(
        f"lm-evaluation-harness task {task} reports no higher-is-better metric "
        f"({', '.join(metrics) or 'none'}), so it has no recovery; a group needs an aggregate_metric_list"
    )


def _leaf_tasks(task: str, group_subtasks: dict[str, list[str]]) -> list[str]:
    children = group_subtasks.get(task)
    if not children:
        return [task]
    return [leaf for child in children for leaf in _leaf_tasks(child, group_subtasks)]


def _harness() -> tuple[Any, Any, Any]:
    """simple_evaluate, HFLM and TaskManager, or HarnessUnavailable with the reason."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise HarnessUnavailable(
            f"evaluation.harness needs lm-evaluation-harness, which cannot be imported ({exc}): "
            "pip install 'lingudistill[eval]' (or pip install 'lm-eval[hf]')"
        ) from exc
    return lm_eval.simple_evaluate, HFLM, TaskManager
