"""A tiny LLaVA-OneVision: SigLIP tower on 16 px tiles, anyres tiling up to 32 px, MLP projector, Qwen2 decoder.

An image becomes the base view plus the anyres tiles of its best grid pinpoint (at most 2 x 2 tiles of 16 px),
each tile 2 x 2 patches, plus one image_newline per row of the unpadded feature map. The processor is saved without
its video processor (which needs torchvision); the image path needs none.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    Qwen2Config,
)

from lingudistill.models.families.llava_onevision import ImageOnlyLlavaOnevisionProcessor
from lingudistill.tiny.common import TINY_TEXT, save_teacher, tiny_siglip
from lingudistill.tiny.tokenizer import DEFAULT_WORDS, build_tokenizer

TILE = 16
PATCH_SIZE = 8
PINPOINTS = [[16, 16], [16, 32], [32, 16], [32, 32]]


def build_llava_onevision(
    folder: Path,
    *,
    words: tuple[str, ...] = DEFAULT_WORDS,
    seed: int = 0,
    text_overrides: dict | None = None,
    teacher_matches_student: bool = True,
) -> tuple[Path, Path]:
    """Save a tiny LLaVA-OneVision student to folder/student and its Qwen2 teacher to folder/teacher."""
    tokenizer = build_tokenizer(words, image_placeholder="<image>", extra_specials=("<video>",))
    text_config = Qwen2Config(
        **{**TINY_TEXT, "vocab_size": len(tokenizer), **(text_overrides or {})},
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision_config = tiny_siglip(TILE, PATCH_SIZE)
    config = LlavaOnevisionConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=PINPOINTS,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    student = LlavaOnevisionForConditionalGeneration(config)
    processor = ImageOnlyLlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessorPil(
            size={"height": TILE, "width": TILE}, image_grid_pinpoints=PINPOINTS
        ),
        tokenizer=tokenizer,
        num_image_tokens=(TILE // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="full",
        chat_template=tokenizer.chat_template,
    )
    student_dir, teacher_dir = folder / "student", folder / "teacher"
    student.save_pretrained(student_dir)
    processor.save_pretrained(student_dir)
    save_teacher(text_config, tokenizer, teacher_dir, student if teacher_matches_student else None, seed + 1)
    return student_dir, teacher_dir
