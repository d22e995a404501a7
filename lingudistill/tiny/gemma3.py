"""A tiny Gemma3: SigLIP vision tower, pooled soft-embedding projector, Gemma3 decoder with sliding-window layers.

The decoder has one sliding-window layer (window 8, shorter than every test prompt) and one global layer, so the
identity tests exercise the sliding mask. The teacher is a Gemma3ForCausalLM with the same text config.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    Gemma3TextConfig,
    PreTrainedTokenizerFast,
)

from lingudistill.tiny.common import PEAKED_INIT, TINY_TEXT, save_teacher, tiny_siglip
from lingudistill.tiny.tokenizer import DEFAULT_WORDS, build_tokenizer

IMAGE_SIZE = 32
PATCH_SIZE = 8
MM_TOKENS_PER_IMAGE = 4  # 4x4 patches, average-pooled 2x2
SLIDING_WINDOW = 8

BOI, EOI, SOFT = "<start_of_image>", "<end_of_image>", "<image_soft_token>"

# Gemma's chat format: the assistant speaks as "model"; an image part becomes <start_of_image>.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}" + BOI + "{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def build_gemma_tokenizer(words: tuple[str, ...] = DEFAULT_WORDS) -> PreTrainedTokenizerFast:
    tokenizer = build_tokenizer(
        (*words, "model"),
        image_placeholder=BOI,
        extra_specials=(EOI, SOFT, "<start_of_turn>", "<end_of_turn>"),
        chat_template=GEMMA_TEMPLATE,
    )
    # Gemma3Processor reads these named tokens (tokenizer.boi_token, .image_token ...); they are saved with it.
    tokenizer._set_model_specific_special_tokens({"boi_token": BOI, "eoi_token": EOI, "image_token": SOFT})
    return tokenizer


def build_gemma3(
    folder: Path,
    *,
    words: tuple[str, ...] = DEFAULT_WORDS,
    seed: int = 0,
    text_overrides: dict | None = None,
    teacher_matches_student: bool = True,
) -> tuple[Path, Path]:
    """Save a tiny Gemma3 student to folder/student and its Gemma3ForCausalLM teacher to folder/teacher."""
    tokenizer = build_gemma_tokenizer(words)
    text_config = Gemma3TextConfig(
        **{
            **TINY_TEXT,
            "vocab_size": len(tokenizer),
            "query_pre_attn_scalar": TINY_TEXT["head_dim"],
            "sliding_window": SLIDING_WINDOW,
            "layer_types": ["sliding_attention", "full_attention"],
            **(text_overrides or {}),
        },
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision_config = tiny_siglip(IMAGE_SIZE, PATCH_SIZE)
    config = Gemma3Config(
        text_config=text_config,
        vision_config=vision_config,
        mm_tokens_per_image=MM_TOKENS_PER_IMAGE,
        boi_token_index=tokenizer.convert_tokens_to_ids(BOI),
        eoi_token_index=tokenizer.convert_tokens_to_ids(EOI),
        image_token_index=tokenizer.convert_tokens_to_ids(SOFT),
        tie_word_embeddings=False,
        initializer_range=PEAKED_INIT,  # the lm_head takes the outer config's range: 0.02 gives near-uniform logits
    )
    torch.manual_seed(seed)
    student = Gemma3ForConditionalGeneration(config)
    with torch.no_grad():  # Gemma3 initialises the projection to zeros, which would make every image token alike
        projection = student.model.multi_modal_projector.mm_input_projection_weight
        projection.normal_(0.0, PEAKED_INIT)
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer,
        image_seq_length=MM_TOKENS_PER_IMAGE,
        chat_template=tokenizer.chat_template,
    )
    student_dir, teacher_dir = folder / "student", folder / "teacher"
    student.save_pretrained(student_dir)
    processor.save_pretrained(student_dir)
    save_teacher(text_config, tokenizer, teacher_dir, student if teacher_matches_student else None, seed + 1)
    return student_dir, teacher_dir
