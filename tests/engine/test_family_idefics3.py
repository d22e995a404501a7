"""Idefics3 and SmolVLM (Llama decoders): [batch, n_images, 3, H, W] pixel batches.

METHOD.md's identities for these setups (idefics3-whole, idefics3-tiles, smolvlm-whole) are checked in
test_identities.py.
"""

from __future__ import annotations

import pytest
import torch

from lingudistill.models.encoding import Encoder, collate
from tests.engine.identity import kd_of

SETUPS = ["idefics3-whole", "idefics3-tiles", "smolvlm-whole"]


@pytest.fixture(scope="module", params=SETUPS)
def pair(request, tiny_families):
    return tiny_families(request.param).pair


def test_collate_pads_images_across_rows(pair):
    """A text-only row gets only zero (padding) images; rows with fewer tiles are padded to the most."""
    student, _, records = pair
    assert student.adapter.name == student.model.config.model_type
    encoder = Encoder(student.adapter, student.processor, max_seq_len=512)
    examples = [encoder.encode(r) for r in records]
    batch = collate(examples, student.adapter, pad_token_id=0)
    pixels, mask = batch["pixel_values"], batch["pixel_attention_mask"]
    most = max(ex.images["pixel_values"].shape[1] for ex in examples if ex.images)
    assert pixels.shape[:2] == mask.shape[:2] == (3, most)
    assert not pixels[1].any() and not mask[1].any()
    for row in (0, 2):
        n = examples[row].images["pixel_values"].shape[1]
        assert (pixels[row, :n].flatten(1) != 0).any(-1).all()
        assert not pixels[row, n:].any()


def test_image_rows_alone_match_a_mixed_batch(pair):
    """The image rows give the same loss with and without a text-only row (padding images) between them."""
    student, teacher, records = pair
    _, ce_mixed, batch = kd_of(student, teacher, records)
    assert batch["pixel_values"].shape[0] == 3
    ce_rows = sum(kd_of(student, teacher, [record])[1] for record in records)
    assert abs(ce_mixed - ce_rows) <= 1e-4 * ce_rows


def test_tiles_give_more_image_tokens(tiny_families):
    counts = []
    for name in ("idefics3-whole", "idefics3-tiles"):
        student, _, records = tiny_families(name).pair
        example = Encoder(student.adapter, student.processor, max_seq_len=512).encode(records[0])
        counts.append(int(example.mm_token_type_ids.sum()))
    assert counts[1] > counts[0]
    assert torch.tensor(counts).gt(0).all()
