"""Length grouping inside one optimiser step (`training.group_by_length: step`).

A step's records are cut into `count` micro-batches of `micro_batch` records. `collate` pads each micro-batch to
its longest prompt P and its longest response R, so it computes micro_batch x (max P + max R) tokens. Which
records share a micro-batch does not change the step's loss or gradient: both loss terms are means over the whole
step's tokens (METHOD.md) and padding is masked. So the step's records are re-partitioned by length, and nothing
moves between steps: the mixture's weights, epochs, order across steps and resume state stay the plain sampler's.

The partition is the cheapest of a few two-level slab cuts (as in the pool sampler): sort by one length, cut into
slabs of whole micro-batches, sort each slab by the other length, cut into micro-batches. Every slab count that
divides `count`, with either length first, is tried and the one computing the fewest tokens kept (the draw order
when none computes fewer), so a step of one kind of data and a step of mixed modalities both get a good cut. All
of it depends on the lengths alone, with ties broken by position, so every rank and every resume cuts alike.
"""

from __future__ import annotations

from collections.abc import Sequence

Lengths = Sequence[tuple[int, int]]  # (prompt tokens, response tokens) of each of the step's records, in draw order


def group_within_step(lengths: Lengths, micro_batch: int) -> list[int]:
    """A permutation of range(len(lengths)) whose consecutive runs of `micro_batch` are the new micro-batches.

    One micro-batch (grad_accum 1) is returned in draw order: there is nothing to regroup."""
    if micro_batch < 1 or len(lengths) % micro_batch:
        raise ValueError(f"{len(lengths)} records do not cut into micro-batches of {micro_batch}")
    count = len(lengths) // micro_batch
    if count <= 1:
        return list(range(len(lengths)))
    cuts = [list(range(len(lengths)))] + [  # the draw order first: no cut computes more, and ties keep it
        _slab_cut(lengths, micro_batch, slabs, first)
        for slabs in range(1, count + 1)
        if count % slabs == 0
        for first in (0, 1)
    ]
    return min(cuts, key=lambda order: computed_tokens(lengths, order, micro_batch))  # the first of equals


def computed_tokens(lengths: Lengths, order: Sequence[int], micro_batch: int) -> int:
    """Tokens `collate` computes for the micro-batches `order` cuts: micro_batch x (max P + max R) each."""
    total = 0
    for start in range(0, len(order), micro_batch):
        batch = [lengths[i] for i in order[start : start + micro_batch]]
        total += len(batch) * (max(p for p, _ in batch) + max(r for _, r in batch))
    return total


def _slab_cut(lengths: Lengths, micro_batch: int, slabs: int, first: int) -> list[int]:
    """Sort by length `first` (0 prompt, 1 response), cut into `slabs` equal slabs, sort each by the other."""
    second = 1 - first
    by_first = sorted(range(len(lengths)), key=lambda i: (lengths[i][first], lengths[i][second], i))
    slab = len(lengths) // slabs
    order: list[int] = []
    for start in range(0, len(by_first), slab):
        order += sorted(by_first[start : start + slab], key=lambda i: (lengths[i][second], lengths[i][first], i))
    return order
