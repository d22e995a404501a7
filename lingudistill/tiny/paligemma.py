"""A tiny PaliGemma: SigLIP vision tower, linear projector, Gemma decoder (Gemma2 for PaliGemma2).

PaliGemma has no chat template; its processor builds `<image>... <bos> prefix \\n suffix <eos>` and adds 1152
location/segmentation tokens to the tokenizer, so the vocabulary is sized after the processor exists. The teacher
is GemmaForCausalLM (Gemma2ForCausalLM) with the student's text config, except that PaliGemmaConfig switches on
`use_bidirectional_attention` for its decoder: a teacher LM is causal, so its copy has it off.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import (
    Gemma2Config,
    GemmaConfig,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    SiglipImageProcessorPil,
)

from lingudistill.tiny.common import TINY_TEXT, save_teacher, tiny_siglip
from lingudistill.tiny.tokenizer import DEFAULT_WORDS, build_tokenizer

IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_SEQ_LENGTH = (IMAGE_SIZE // PATCH_SIZE) ** 2


def build_paligemma(
    folder: Path,
    *,
    decoder: str = "gemma",
    words: tuple[str, ...] = DEFAULT_WORDS,
    seed: int = 0,
    text_overrides: dict | None = None,
    teacher_matches_student: bool = True,
) -> tuple[Path, Path]:
    """Save a tiny PaliGemma student to folder/student and its teacher LM to folder/teacher."""
    tokenizer = build_tokenizer(words, image_placeholder="<image>")
    tokenizer._set_model_specific_special_tokens({"image_token": "<image>"})
    processor = PaliGemmaProcessor(  # adds the <loc....>/<seg...> tokens to the tokenizer
        image_processor=SiglipImageProcessorPil(
            size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_seq_length=IMAGE_SEQ_LENGTH
        ),
        tokenizer=tokenizer,
    )
    text_kwargs = {**TINY_TEXT, "vocab_size": len(tokenizer)}
    if decoder == "gemma2":
        # Gemma2 alternates sliding and global layers; no attention-logit softcap (SDPA has none).
        text_kwargs.update(sliding_window=64, attn_logit_softcapping=None, final_logit_softcapping=30.0)
    text_kwargs.update(text_overrides or {})
    text_config = (GemmaConfig if decoder == "gemma" else Gemma2Config)(
        **text_kwargs,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    teacher_config = copy.deepcopy(text_config)
    vision_config = tiny_siglip(IMAGE_SIZE, PATCH_SIZE)
    config = PaliGemmaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        projection_dim=text_config.hidden_size,
        hidden_size=text_config.hidden_size,
        vocab_size=len(tokenizer),
        tie_word_embeddings=False,
    )
    teacher_config.use_bidirectional_attention = False
    torch.manual_seed(seed)
    student = PaliGemmaForConditionalGeneration(config)
    student_dir, teacher_dir = folder / "student", folder / "teacher"
    student.save_pretrained(student_dir)
    processor.save_pretrained(student_dir)
    save_teacher(teacher_config, tokenizer, teacher_dir, student if teacher_matches_student else None, seed + 1)
    return student_dir, teacher_dir
