"""Pieces shared by the tiny family builders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast, SiglipVisionConfig

# Peaked attention: with the default tiny initialisation attention is nearly uniform, and a wrong position
# or mask would hardly change the logits (METHOD.md). A larger init makes identity tests sensitive.
PEAKED_INIT = 0.2

TINY_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 512,
    "initializer_range": PEAKED_INIT,
    "tie_word_embeddings": False,
}


def tiny_siglip(image_size: int, patch_size: int, hidden: int = 32) -> SiglipVisionConfig:
    """A one-layer SigLIP vision tower: the vision side only has to produce image tokens, fast."""
    return SiglipVisionConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )


def save_teacher(
    text_config: Any, tokenizer: PreTrainedTokenizerFast, folder: Path, student: PreTrainedModel | None, seed: int
) -> Path:
    """Save a text-only teacher LM; with `student`, its decoder and lm_head are copies of the student's."""
    torch.manual_seed(seed)
    teacher = AutoModelForCausalLM.from_config(text_config)
    if student is not None:
        copy_decoder_into_teacher(student, teacher)
    teacher.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def copy_decoder_into_teacher(student: PreTrainedModel, teacher: PreTrainedModel) -> None:
    from lingudistill.models.families import adapter_for

    adapter = adapter_for(student.config)
    missing, unexpected = teacher.model.load_state_dict(adapter.decoder(student).state_dict(), strict=False)
    if missing or unexpected:
        raise ValueError(f"teacher and student decoder differ: missing {missing}, unexpected {unexpected}")
    teacher.lm_head.load_state_dict(adapter.lm_head(student).state_dict())
