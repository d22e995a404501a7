"""A suite's scores: a plain record, kept apart from the scorer so that what reads and compares finished reports
(the lift, the report, `lingudistill compare`, the service's control arms and sweeps) never imports torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

SuiteKind = Literal["language", "vision"]


@dataclass(frozen=True)
class SuiteScore:
    """One suite's result. `score` is metrics[metric]; None when the suite has no items.

    `items` holds the per-item scores on the primary metric, {item key: score} in suite order, so that `score`
    is their mean; None where the scorer does not give them (an lm-evaluation-harness task run without samples,
    a result stored before per-item scores existed).
    """

    name: str
    kind: SuiteKind
    metric: str
    score: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    n_items: int = 0
    items: dict[str, float] | None = None

    def to_dict(self, *, with_items: bool = True) -> dict[str, Any]:
        data = {
            "name": self.name,
            "kind": self.kind,
            "metric": self.metric,
            "score": self.score,
            "metrics": dict(self.metrics),
            "n_items": self.n_items,
        }
        if with_items and self.items is not None:
            data["items"] = {"keys": list(self.items), "scores": list(self.items.values())}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SuiteScore:
        stored = data.get("items")
        items = dict(zip(stored["keys"], stored["scores"], strict=True)) if stored is not None else None
        return cls(
            data["name"], data["kind"], data["metric"], data["score"], dict(data["metrics"]), data["n_items"], items
        )
