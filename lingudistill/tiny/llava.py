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

from lingudistill.tiny.common import TINY_TEXT, save_teacher, tiny_siglip, tiny_vocab
from lingudistill.tiny.tokenizer import DEFAULT_WORDS

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
    extended_vocab: bool = False,
) -> tuple[Path, Path]:
    """Save a tiny LLaVA student to folder/student and its teacher LM to folder/teacher.

    extended_vocab: LLaVA-1.5 over Vicuna: <image> appended to the teacher's tokenizer and the student's lm_head
    padded past it (32064 rows over 32000)."""
    vocab = tiny_vocab(words, image_placeholder="<image>", rows="padded" if extended_vocab else "same")
    tokenizer = vocab.student
    text_kwargs = {**TINY_TEXT, "vocab_size": vocab.student_rows, **(text_overrides or {})}
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
    teacher = student if teacher_matches_student else None
    save_teacher(text_config, vocab.teacher, teacher_dir, teacher, seed + 1, vocab_rows=vocab.teacher_rows)
    return student_dir, teacher_dir
