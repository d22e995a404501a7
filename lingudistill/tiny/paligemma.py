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

from lingudistill.tiny.common import TINY_TEXT, save_teacher, tiny_siglip, tiny_vocab
from lingudistill.tiny.tokenizer import DEFAULT_WORDS

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
    extended_vocab: bool = False,
) -> tuple[Path, Path]:
    """Save a tiny PaliGemma student to folder/student and its teacher LM to folder/teacher.

    extended_vocab: PaliGemma over Gemma: <image> and the processor's location/segmentation tokens are appended to
    the teacher's tokenizer (257216 over 256000); otherwise the teacher shares the student's tokenizer."""
    vocab = tiny_vocab(words, image_placeholder="<image>", rows="tokenizer" if extended_vocab else "same")
    tokenizer = vocab.student
    tokenizer._set_model_specific_special_tokens({"image_token": "<image>"})
    processor = PaliGemmaProcessor(  # adds the <loc....>/<seg...> tokens to the tokenizer
        image_processor=SiglipImageProcessorPil(
            size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_seq_length=IMAGE_SEQ_LENGTH
        ),
        tokenizer=tokenizer,
    )
    text_kwargs = {**TINY_TEXT, "vocab_size": len(tokenizer)}
    if decoder == "gemma2":
        # Gemma2 alternates sliding and global layers; no attention-logit softcap (SDPA has none). Its default
        # query_pre_attn_scalar (256) would scale the tiny head's scores by 1/16 and flatten the attention.
        text_kwargs.update(
            sliding_window=64,
            attn_logit_softcapping=None,
            final_logit_softcapping=30.0,
            query_pre_attn_scalar=TINY_TEXT["head_dim"],
        )
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
    teacher = student if teacher_matches_student else None
    save_teacher(teacher_config, vocab.teacher, teacher_dir, teacher, seed + 1, vocab_rows=len(vocab.teacher))
    return student_dir, teacher_dir
