"""Length grouping inside one optimiser step: a re-partition of exactly the step's records, cheaper to compute."""

from __future__ import annotations

import itertools
import random

import pytest

from lingudistill.data.grouping import computed_tokens, group_within_step


def vlm_step(seed: int, records: int) -> list[tuple[int, int]]:
    """(prompt, response) lengths of a step mixing short-answer VQA, image instructions and text-only chats."""
    rng = random.Random(seed)
    kinds = [
        lambda: (576 + rng.randint(10, 40), rng.randint(5, 12)),
        lambda: (576 + rng.randint(15, 60), rng.randint(20, 400)),
        lambda: (rng.randint(20, 600), rng.randint(50, 400)),
    ]
    return [rng.choice(kinds)() for _ in range(records)]


@pytest.mark.parametrize(("micro_batch", "count"), [(1, 4), (2, 4), (4, 8), (8, 16), (3, 6)])
def test_the_cut_is_a_permutation_of_the_steps_records_that_computes_less(micro_batch: int, count: int) -> None:
    lengths = vlm_step(micro_batch * count, micro_batch * count)
    order = group_within_step(lengths, micro_batch)
    assert sorted(order) == list(range(len(lengths)))
    drawn = list(range(len(lengths)))
    if micro_batch > 1:
        assert computed_tokens(lengths, order, micro_batch) < computed_tokens(lengths, drawn, micro_batch)


def test_one_micro_batch_per_step_keeps_the_draw_order() -> None:
    lengths = vlm_step(1, 8)
    assert group_within_step(lengths, 8) == list(range(8))


def test_a_step_of_equal_lengths_keeps_the_draw_order() -> None:
    assert group_within_step([(30, 7)] * 12, 3) == list(range(12))


def test_two_kinds_of_record_are_never_mixed_in_a_micro_batch() -> None:
    rng = random.Random(5)
    kinds = [(600, 8)] * 8 + [(40, 200)] * 8
    rng.shuffle(kinds)
    order = group_within_step(kinds, 4)
    batches = [{kinds[i] for i in order[start : start + 4]} for start in range(0, 16, 4)]
    assert all(len(batch) == 1 for batch in batches)


def test_micro_batches_are_sorted_by_length() -> None:
    lengths = [(p, 10) for p in random.Random(2).sample(range(100, 300), 16)]
    order = group_within_step(lengths, 4)
    prompts = [[lengths[i][0] for i in order[start : start + 4]] for start in range(0, 16, 4)]
    assert all(max(earlier) < min(later) for earlier, later in itertools.pairwise(prompts))


def test_computed_tokens_is_what_collate_pads_to() -> None:
    # two micro-batches of 2: (max P 50 + max R 9) x 2 and (max P 70 + max R 3) x 2
    assert computed_tokens([(50, 1), (10, 9), (70, 3), (60, 2)], [0, 1, 2, 3], 2) == 2 * 59 + 2 * 73


def test_a_step_that_does_not_cut_into_micro_batches_is_refused() -> None:
    with pytest.raises(ValueError, match="micro-batches of 4"):
        group_within_step(vlm_step(0, 10), 4)
