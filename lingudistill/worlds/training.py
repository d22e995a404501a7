"""The plain loops that make a world: next-token cross-entropy, not LinguDistill."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lingudistill.data.records import Record, parse_record
from lingudistill.models.encoding import Encoder, Example, collate
from lingudistill.models.families.base import FamilyAdapter


@contextmanager
def threads(count: int) -> Iterator[None]:
    """Run torch on `count` threads (tiny models train faster on one: synchronising costs more than the math)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def fit(
    model: Any,
    examples: Sequence[Example],
    adapter: FamilyAdapter | None,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    lr_projector: float | None = None,
    seed: int,
    progress: bool = False,
    desc: str = "training",
    on_step: Callable[[int, float], None] | None = None,
) -> None:
    """Plain next-token cross-entropy on the labelled tokens: AdamW, warm-up and cosine decay, clipping at 1."""
    collate_adapter = adapter or FamilyAdapter()
    parameters = [p for p in model.parameters() if p.requires_grad]
    # the projector's rate also applies to the vision tower when that trains
    projector = (
        {id(p) for p in [*adapter.projector(model).parameters(), *adapter.vision(model).parameters()]}
        if adapter
        else set()
    )
    groups = [
        {"params": [p for p in parameters if id(p) not in projector], "lr": lr},
        {"params": [p for p in parameters if id(p) in projector], "lr": lr_projector or lr},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.0)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
    )
    rng = random.Random(seed)
    order: list[int] = []
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        if len(order) < batch_size:
            order += rng.sample(range(len(examples)), len(examples))
        batch = collate([examples[i] for i in order[:batch_size]], collate_adapter, pad_token_id=0)
        del order[:batch_size]
        mask = batch["attention_mask"]
        extra = collate_adapter.forward_kwargs(batch) if adapter else {}
        loss = model(
            input_ids=batch["input_ids"],
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            labels=batch["labels"],
            **extra,
        ).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
        if on_step is not None:
            on_step(step, float(loss.detach()))
    model.eval()


def encode_rows(encoder: Encoder, rows: Sequence[dict[str, Any]], source: str, base_dir: Path) -> list[Example]:
    """Encode JSONL-shaped rows (prompt/response, optional images relative to base_dir) as training examples."""
    return [encoder.encode(record) for record in records_of(rows, source, base_dir)]


def records_of(rows: Sequence[dict[str, Any]], source: str, base_dir: Path) -> list[Record]:
    return [
        parse_record(row, source=source, origin=f"{source}:{n}", base_dir=base_dir)
        for n, row in enumerate(rows, start=1)
    ]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
