"""PaliGemma and PaliGemma2: a bidirectional prefix and 1-based positions.

METHOD.md's identities for both (paligemma, paligemma2) are checked in test_identities.py, including why their
visual modes are not exact.
"""

from __future__ import annotations

import pytest
import torch

from lingudistill.models.encoding import IGNORE, Encoder
from tests.engine.identity import causal_token_types, kd_of


@pytest.fixture(scope="module", params=["paligemma", "paligemma2"])
def pair(request, tiny_families):
    return tiny_families(request.param).pair


def test_records_are_laid_out_as_the_processor_does(pair):
    """<image>s, bos, prefix, newline, then the suffix (last assistant turn) and eos, which alone are labelled."""
    student, _, records = pair
    tokenizer = student.processor.tokenizer
    encoder = Encoder(student.adapter, student.processor, max_seq_len=512)
    example = encoder.encode(records[0])
    tokens = tokenizer.convert_ids_to_tokens(example.input_ids)
    n = student.processor.image_seq_length
    assert tokens[: n + 1] == ["<image>"] * n + [tokenizer.bos_token]
    assert int(example.mm_token_type_ids.sum()) == n
    labelled = tokenizer.convert_ids_to_tokens(example.input_ids[example.labels != IGNORE])
    assert labelled == ["the", "square", "is", "red", ".", tokenizer.eos_token]
    multi_turn = encoder.encode(records[1])
    labelled = tokenizer.convert_ids_to_tokens(multi_turn.input_ids[multi_turn.labels != IGNORE])
    assert labelled == ["six", ".", "the", "answer", "is", "six", tokenizer.eos_token]


def test_positions_count_from_one(pair):
    _, _, batch = kd_of(*pair)
    positions = pair[0].adapter.position_ids(pair[0].model, batch)
    first_real = batch["attention_mask"].argmax(-1)
    assert (positions[torch.arange(len(first_real)), first_real] == 1).all()


def test_prefix_attention_is_bidirectional(pair):
    """token_type_ids reach the student: a causal prefix changes the loss."""
    student, _, _ = pair
    _, ce, _ = kd_of(*pair)
    original = student.adapter.forward_kwargs
    student.adapter.forward_kwargs = lambda batch: {**original(batch), "token_type_ids": causal_token_types(batch)}
    try:
        _, ce_causal, _ = kd_of(*pair)
    finally:
        student.adapter.forward_kwargs = original
    assert abs(ce - ce_causal) > 1e-4
