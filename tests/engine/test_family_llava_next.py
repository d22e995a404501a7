"""LLaVA-NeXT (Llama decoder): anyres tiles of different counts per image, every image with its own grid.

METHOD.md's identities for LLaVA-NeXT are checked in test_identities.py.
"""

from __future__ import annotations

import pytest

from lingudistill.models.encoding import Encoder, collate


@pytest.fixture(scope="module")
def pair(tiny_families):
    return tiny_families("llava-next").pair


def test_collate_pads_tiles_and_keeps_image_sizes(pair):
    student, _, records = pair
    assert student.adapter.name == "llava_next"
    encoder = Encoder(student.adapter, student.processor, max_seq_len=512)
    examples = [encoder.encode(r) for r in records]
    tiles = [ex.images["pixel_values"].shape[1] for ex in examples if ex.images]
    assert len(set(tiles)) > 1, "the two test images must take different anyres grids"
    batch = collate(examples, student.adapter, pad_token_id=0)
    assert batch["pixel_values"].shape[:2] == (2, max(tiles))
    assert batch["image_sizes"].tolist() == [[30, 40], [48, 24]]
