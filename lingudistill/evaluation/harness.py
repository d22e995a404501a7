"""Optional: lm-evaluation-harness tasks (ARC, HellaSwag, MMLU ...) on a loaded text model.

Used only when the `lm_eval` package is installed and its task data is reachable; nothing else imports it.
Vision suites stay with the engine's own scorer (lmms-eval is not wired in: its model API is per-family).
"""

from __future__ import annotations

from typing import Any

from lingudistill.evaluation.scoring import SuiteKind, SuiteScore


class HarnessUnavailable(RuntimeError):
    """lm-evaluation-harness is not installed."""


def harness_available() -> bool:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        return False
    return True


def evaluate_harness_tasks(
    tasks: list[str],
    model: Any,
    tokenizer: Any,
    *,
    batch_size: int,
    kind: SuiteKind = "language",
    limit: int | None = None,
) -> dict[str, SuiteScore]:
    """Run lm-evaluation-harness `tasks` on an in-memory HF causal LM; acc_norm when the task reports it."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
    except ImportError as exc:
        raise HarnessUnavailable("lm-evaluation-harness is not installed: pip install lm-eval") from exc
    wrapped = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    results = simple_evaluate(model=wrapped, tasks=tasks, limit=limit)["results"]
    scores = {}
    for task, values in results.items():
        metrics = {
            key.split(",")[0]: float(v)
            for key, v in values.items()
            if isinstance(v, int | float) and "stderr" not in key
        }
        metric = next((m for m in ("acc_norm", "acc", "exact_match") if m in metrics), next(iter(metrics), "score"))
        n_items = int(limit) if limit else 0
        scores[task] = SuiteScore(task, kind, metric, metrics.get(metric), metrics, n_items)
    return scores
