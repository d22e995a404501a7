"""A tiny LLaVA: SigLIP vision tower, MLP projector, Llama or Qwen2 decoder."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipImageProcessorPil,
)

from lingudistill.tiny.common import TINY_TEXT, save_teacher, tiny_siglip
from lingudistill.tiny.tokenizer import DEFAULT_WORDS, build_tokenizer

IMAGE_SIZE = 32
PATCH_SIZE = 8


def llava_config(
    text_config: PretrainedConfig, tokenizer: PreTrainedTokenizerFast, vision_hidden: int = 32
) -> LlavaConfig:
    """A one-layer SigLIP tower on 32 px images (16 patches), an MLP projector and `text_config`'s decoder."""
    return LlavaConfig(
        vision_config=tiny_siglip(IMAGE_SIZE, PATCH_SIZE, vision_hidden),
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )


def llava_processor(tokenizer: PreTrainedTokenizerFast) -> LlavaProcessor:
    return LlavaProcessor(
        image_processor=SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="full",
        chat_template=tokenizer.chat_template,
    )


def build_llava(
    folder: Path,
    *,
    decoder: str = "llama",
    words: tuple[str, ...] = DEFAULT_WORDS,
    seed: int = 0,
    text_overrides: dict | None = None,
    teacher_matches_student: bool = True,
) -> tuple[Path, Path]:
    """Save a tiny LLaVA student to folder/student and its teacher LM to folder/teacher."""
    tokenizer = build_tokenizer(words, image_placeholder="<image>")
    text_kwargs = {**TINY_TEXT, "vocab_size": len(tokenizer), **(text_overrides or {})}
    text_config = (LlamaConfig if decoder == "llama" else Qwen2Config)(
        **text_kwargs,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    student = LlavaForConditionalGeneration(llava_config(text_config, tokenizer))
    processor = llava_processor(tokenizer)
    student_dir, teacher_dir = folder / "student", folder / "teacher"
    student.save_pretrained(student_dir)
    processor.save_pretrained(student_dir)
    save_teacher(text_config, tokenizer, teacher_dir, student if teacher_matches_student else None, seed + 1)
    return student_dir, teacher_dir
