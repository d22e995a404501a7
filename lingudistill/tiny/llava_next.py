"""A tiny LLaVA-NeXT: SigLIP tower on 16 px tiles, anyres tiling up to 32 px, MLP projector, Llama decoder.

An image becomes the base view plus the anyres tiles of its best grid pinpoint (at most 2 x 2 tiles of 16 px), each
tile 2 x 2 patches, plus one image_newline per row of the unpadded feature map. Vocabulary as LLaVA-NeXT-Vicuna over
Vicuna: <image> appended to the teacher's tokenizer, the student's lm_head padded past it (32064 over 32000).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    LlamaConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
)

from lingudistill.tiny.common import TINY_TEXT, save_teacher, tiny_siglip, tiny_vocab
from lingudistill.tiny.tokenizer import DEFAULT_WORDS

TILE = 16
PATCH_SIZE = 8
PINPOINTS = [[16, 16], [16, 32], [32, 16], [32, 32]]


def build_llava_next(
    folder: Path,
    *,
    words: tuple[str, ...] = DEFAULT_WORDS,
    seed: int = 0,
    text_overrides: dict | None = None,
    teacher_matches_student: bool = True,
) -> tuple[Path, Path]:
    """Save a tiny LLaVA-NeXT student to folder/student and its Llama teacher to folder/teacher."""
    vocab = tiny_vocab(words, image_placeholder="<image>", rows="padded")
    tokenizer = vocab.student
    text_config = LlamaConfig(
        **{**TINY_TEXT, "vocab_size": vocab.student_rows, **(text_overrides or {})},
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = LlavaNextConfig(
        vision_config=tiny_siglip(TILE, PATCH_SIZE),
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=PINPOINTS,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    student = LlavaNextForConditionalGeneration(config)
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessorPil(
            size={"height": TILE, "width": TILE},
            crop_size={"height": TILE, "width": TILE},
            image_grid_pinpoints=PINPOINTS,
        ),
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="full",
        chat_template=tokenizer.chat_template,
    )
    student_dir, teacher_dir = folder / "student", folder / "teacher"
    student.save_pretrained(student_dir)
    processor.save_pretrained(student_dir)
    teacher = student if teacher_matches_student else None
    save_teacher(text_config, vocab.teacher, teacher_dir, teacher, seed + 1, vocab_rows=vocab.teacher_rows)
    return student_dir, teacher_dir
