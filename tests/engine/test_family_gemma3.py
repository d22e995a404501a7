"""Gemma3: token-type-driven bidirectional image attention and sliding-window layers.

METHOD.md's identities for Gemma3 are checked in test_identities.py.
"""

from __future__ import annotations

import pytest
import torch

from lingudistill.tiny.gemma3 import SLIDING_WINDOW
from tests.engine.identity import kd_of


@pytest.fixture(scope="module")
def pair(tiny_families):
    return tiny_families("gemma3").pair


def test_tiny_model_exercises_the_sliding_window(pair):
    student, teacher, _ = pair
    assert student.adapter.name == "gemma3"
    assert type(teacher.model).__name__ == "Gemma3ForCausalLM"
    assert "sliding_attention" in teacher.model.config.layer_types
    _, _, batch = kd_of(*pair)
    assert batch["prompt_length"] > 2 * SLIDING_WINDOW


def test_a_teacher_without_the_sliding_window_breaks_the_identity(pair):
    """The window matters on these prompts: the teacher's sliding layer must mask exactly as the student's."""
    config = pair[1].model.config
    window, config.sliding_window = config.sliding_window, 10_000
    try:
        kd, _, _ = kd_of(*pair)
    finally:
        config.sliding_window = window
    assert kd > 1e-3


def test_bidirectional_image_attention_is_on(pair):
    """token_type_ids reach the student: without them the image tokens attend causally and the loss changes."""
    _, ce, batch = kd_of(*pair)
    _, ce_causal, _ = kd_of(*pair, mm_token_type_ids=torch.zeros_like(batch["mm_token_type_ids"]))
    assert abs(ce - ce_causal) > 1e-4
