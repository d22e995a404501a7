"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: multimodal rope, the visual tower's split, the processor's grid.

METHOD.md's identities for the three families are checked in test_identities.py.
"""

from __future__ import annotations

import pytest
import torch

from lingudistill.models.encoding import Encoder, collate
from lingudistill.models.families import FamilyAdapter
from lingudistill.models.families.qwen_vl import Qwen3VLAdapter, QwenVLAdapter
from lingudistill.objective import DistillationObjective
from lingudistill.spec import MethodSpec
from lingudistill.tiny.qwen_vl import FAMILIES
from tests.engine.identity import kd_of, load_pair


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request, tiny_families):
    return tiny_families(request.param).pair


def test_adapter_and_teacher_fit_the_family(pair):
    student, teacher, _ = pair
    model_type = student.model.config.model_type
    assert type(student.adapter) is (Qwen3VLAdapter if model_type == "qwen3_vl" else QwenVLAdapter)
    assert teacher.model.config.model_type == ("qwen3" if model_type == "qwen3_vl" else "qwen2")
    attention = student.adapter.attention_modules(student.model)
    assert len(attention) == student.adapter.text_config(student.model).num_hidden_layers


def test_projector_and_vision_split_the_visual_tower(pair):
    student, _, _ = pair
    adapter, model = student.adapter, student.model
    projector = {id(p) for p in adapter.projector(model).parameters()}
    vision = {id(p) for p in adapter.vision(model).parameters()}
    assert projector and vision and not projector & vision
    assert projector | vision == {id(p) for p in model.model.visual.parameters()}


def test_frozen_vision_still_trains_the_projector_and_decoder(tiny_families):
    """As the recipe configures a student: the vision blocks frozen, the merger(s) and decoder get gradients."""
    tiny = tiny_families("qwen3_vl")
    student, teacher = load_pair(tiny.student_dir, tiny.teacher_dir)  # a fresh copy: this test trains it
    adapter, model = student.adapter, student.model
    model.train()
    adapter.vision(model).requires_grad_(False)
    encoder = Encoder(adapter, student.processor, max_seq_len=512)
    batch = collate([encoder.encode(r, distill=True) for r in tiny.records], adapter, pad_token_id=0)
    DistillationObjective(model, teacher.model, adapter, MethodSpec())(batch, 1.0, 1.0).parts.total.backward()
    assert all(p.grad is None for p in adapter.vision(model).parameters())
    assert all(p.grad is not None for p in adapter.projector(model).parameters())
    assert all(p.grad is not None for p in adapter.decoder(model).layers.parameters())


def test_processor_expands_images_like_the_grid(pair):
    student, _, records = pair
    encoder = Encoder(student.adapter, student.processor, max_seq_len=512)
    example = encoder.encode(records[0])
    grid = example.images["image_grid_thw"]
    image_token = student.model.config.image_token_id
    assert int((example.input_ids == image_token).sum()) == int(grid.prod()) // 4
    assert int(example.mm_token_type_ids.sum()) == int(grid.prod()) // 4
    assert example.images["pixel_values"].shape[0] == int(grid.prod())


def test_sequential_teacher_positions_break_the_identity(pair):
    """Text after an image is not at its token index: a teacher counting tokens (cumsum) must disagree."""
    student, teacher, records = pair
    adapter = student.adapter
    encoder = Encoder(adapter, student.processor, max_seq_len=512)
    batch = collate([encoder.encode(r, distill=True) for r in records], adapter, pad_token_id=0)  # as kd_of builds it
    by_token_index = FamilyAdapter().position_ids(student.model, batch)
    assert not torch.equal(adapter.teacher_position_ids(adapter.position_ids(student.model, batch)), by_token_index)
    original = adapter.teacher_position_ids
    adapter.teacher_position_ids = lambda positions: by_token_index  # type: ignore[method-assign]
    try:
        kd, _, _ = kd_of(student, teacher, records, "prompt")
    finally:
        adapter.teacher_position_ids = original  # type: ignore[method-assign]
    assert kd > 1e-3, f"KD {kd}: sequential positions match mrope ones, so the mrope hand-over is untested"
