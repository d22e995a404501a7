"""Tiny Qwen2-VL, Qwen2.5-VL and Qwen3-VL students, with Qwen2 / Qwen3 teacher LMs that mirror their text configs.

Images are small (the PIL image processor resizes them to 2x2 .. 4x4 merged tokens), and a non-square image gives a
grid with h != w, so the text after it has rope positions that differ from its token index: a teacher that used
plain indices would break METHOD.md's identity 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForImageTextToText,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2Config,
    Qwen2VLConfig,
    Qwen2VLImageProcessorPil,
    Qwen3Config,
    Qwen3VLConfig,
)

from lingudistill.models.families.qwen_vl import QwenVLAdapter, image_only_processor_class
from lingudistill.tiny.common import TINY_TEXT, save_teacher, tiny_vocab
from lingudistill.tiny.tokenizer import DEFAULT_WORDS

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO_TOKEN = "<|video_pad|>"
MERGE_SIZE = 2
VISION_HIDDEN = 32

# head_dim 16 -> 8 rotary frequencies, shared out among (temporal, height, width) like the real [16, 24, 24] and
# Qwen3-VL's interleaved [24, 20, 20].
_ROPE = {
    "qwen2_vl": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
    "qwen2_5_vl": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
    "qwen3_vl": {
        "rope_type": "default",
        "rope_theta": 5_000_000.0,
        "mrope_section": [4, 2, 2],
        "mrope_interleaved": True,
    },
}
_REAL_SECTIONS = {"qwen2_vl": [16, 24, 24], "qwen2_5_vl": [16, 24, 24], "qwen3_vl": [24, 20, 20]}  # head_dim 128


def rope_parameters(family: str, head_dim: int) -> dict[str, Any]:
    """The tiny rope for head_dim 16; for other shapes (benchmarks) the real sections, scaled to head_dim / 2."""
    rope = dict(_ROPE[family])
    if head_dim != TINY_TEXT["head_dim"]:
        sections = [s * head_dim // 128 for s in _REAL_SECTIONS[family]]
        sections[0] += head_dim // 2 - sum(sections)
        rope["mrope_section"] = sections
    return rope


_PATCH = {"qwen2_vl": 14, "qwen2_5_vl": 14, "qwen3_vl": 16}
_CONFIG = {"qwen2_vl": Qwen2VLConfig, "qwen2_5_vl": Qwen2_5_VLConfig, "qwen3_vl": Qwen3VLConfig}


def _vision_config(family: str, text_hidden: int) -> dict[str, Any]:
    common = {
        "depth": 2,
        "num_heads": 2,
        "in_channels": 3,
        "patch_size": _PATCH[family],
        "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": 2,
        "initializer_range": 0.02,
    }
    if family == "qwen2_vl":
        # embed_dim is the tower's width, hidden_size the merger's output (the decoder's width).
        return {**common, "embed_dim": VISION_HIDDEN, "hidden_size": text_hidden, "mlp_ratio": 2}
    if family == "qwen2_5_vl":
        # Window attention over 2x2 merged tokens in block 0, full attention in block 1.
        return {
            **common,
            "hidden_size": VISION_HIDDEN,
            "intermediate_size": 64,
            "out_hidden_size": text_hidden,
            "window_size": 2 * MERGE_SIZE * _PATCH[family],
            "fullatt_block_indexes": [1],
        }
    return {
        **common,
        "hidden_size": VISION_HIDDEN,
        "intermediate_size": 64,
        "out_hidden_size": text_hidden,
        "num_position_embeddings": 64,
        "deepstack_visual_indexes": [0, 1],
    }


def image_processor(family: str) -> Qwen2VLImageProcessorPil:
    factor = _PATCH[family] * MERGE_SIZE
    return Qwen2VLImageProcessorPil(
        patch_size=_PATCH[family],
        merge_size=MERGE_SIZE,
        temporal_patch_size=2,
        size={"shortest_edge": (2 * factor) ** 2, "longest_edge": (4 * factor) ** 2},
    )


def teacher_text_config(family: str, text_config: Any) -> Qwen2Config | Qwen3Config:
    """The teacher LM's config: the student's text config with plain (1-D) rope of the same theta."""
    values = text_config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "_name_or_path", "dtype"):
        values.pop(key, None)
    values["rope_parameters"] = {
        k: v for k, v in values["rope_parameters"].items() if k not in ("mrope_section", "mrope_interleaved")
    }
    values["tie_word_embeddings"] = False
    return (Qwen3Config if family == "qwen3_vl" else Qwen2Config)(**values)


def build_qwen_vl(
    folder: Path,
    *,
    family: str = "qwen2_vl",
    words: tuple[str, ...] = DEFAULT_WORDS,
    seed: int = 0,
    text_overrides: dict | None = None,
    teacher_matches_student: bool = True,
    extended_vocab: bool = False,
) -> tuple[Path, Path]:
    """Save a tiny Qwen-VL student of `family` to folder/student and its teacher LM to folder/teacher.

    extended_vocab: Qwen2-VL over Qwen2: the vision tokens are appended to the teacher's tokenizer (151657 over
    151646 tokens), and both lm_heads have the same rows, padded past both tokenizers (151936)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown Qwen-VL family {family!r}; one of {', '.join(FAMILIES)}")
    vision_tokens = ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>", VIDEO_TOKEN)
    vocab = tiny_vocab(
        words,
        image_placeholder=IMAGE_PLACEHOLDER,
        student_only=vision_tokens,
        rows="equal" if extended_vocab else "same",
    )
    tokenizer: PreTrainedTokenizerFast = vocab.student
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>")}
    text = {
        **TINY_TEXT,
        "vocab_size": vocab.student_rows,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        **(text_overrides or {}),
    }
    text["rope_parameters"] = rope_parameters(family, text["head_dim"])
    config = _CONFIG[family](
        text_config=text,
        vision_config=_vision_config(family, text["hidden_size"]),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    student = AutoModelForImageTextToText.from_config(config)
    processor = image_only_processor_class(QwenVLAdapter.processor_classes[family])(
        image_processor=image_processor(family), tokenizer=tokenizer, chat_template=tokenizer.chat_template
    )
    student_dir, teacher_dir = folder / "student", folder / "teacher"
    student.save_pretrained(student_dir)
    processor.save_pretrained(student_dir)
    teacher_config = teacher_text_config(family, config.get_text_config(decoder=True))
    teacher = student if teacher_matches_student else None
    save_teacher(teacher_config, vocab.teacher, teacher_dir, teacher, seed + 1, vocab_rows=vocab.teacher_rows)
    return student_dir, teacher_dir
