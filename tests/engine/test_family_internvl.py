"""InternVL (native InternVLForConditionalGeneration over a Qwen2 decoder): tiles, <img> markers, its processor.

METHOD.md's identities for InternVL are checked in test_identities.py.
"""

from __future__ import annotations

import json

import pytest

from lingudistill.models.compat import shared_vocab_size
from lingudistill.models.encoding import Encoder, collate
from lingudistill.tiny.internvl import IMAGE_SEQ_LENGTH


@pytest.fixture(scope="module")
def tiny(tiny_families):
    return tiny_families("internvl")


def test_processor_loads_without_a_video_processor(tiny):
    """The real InternVLProcessor would need torchvision for its video slot; the saved one names the real class."""
    assert type(tiny.student.processor).__name__ == "InternVLProcessor"
    assert not hasattr(tiny.student.processor, "video_processor")
    saved = json.loads((tiny.student_dir / "processor_config.json").read_text())
    assert saved["processor_class"] == "InternVLProcessor" and saved["image_seq_length"] == IMAGE_SEQ_LENGTH


def test_images_become_tiles_between_markers_the_teacher_lacks(tiny):
    student, teacher, records = tiny.pair
    tokenizer = student.processor.tokenizer
    encoder = Encoder(student.adapter, student.processor, max_seq_len=512)
    examples = [encoder.encode(r) for r in records if r.images]
    tiles = [ex.images["pixel_values"].shape[0] for ex in examples]
    assert tiles[0] != tiles[1], "the two test images must be cut into different numbers of tiles"
    for example, count in zip(examples, tiles, strict=True):
        tokens = tokenizer.convert_ids_to_tokens(example.input_ids)
        start = tokens.index("<img>")
        assert tokens[start + 1 + count * IMAGE_SEQ_LENGTH] == "</img>"
        assert int(example.mm_token_type_ids.sum()) == count * IMAGE_SEQ_LENGTH + 2  # the markers count as image
    markers = tokenizer.convert_tokens_to_ids(["<img>", "</img>", "<IMG_CONTEXT>"])
    assert min(markers) >= shared_vocab_size(teacher)
    batch = collate(examples, student.adapter, pad_token_id=0)
    assert batch["pixel_values"].shape[0] == sum(tiles)


def test_the_students_head_is_smaller_than_the_teachers(tiny):
    """As InternVL3 (151674 rows) over Qwen2.5 (151936): both cover the teacher's tokens, the student's has fewer."""
    student, teacher, _ = tiny.pair
    rows = student.adapter.lm_head(student.model).weight.shape[0]
    assert len(teacher.tokenizer) < rows < teacher.model.lm_head.weight.shape[0]
