"""A tiny Idefics3 or SmolVLM: Idefics3 vision tower (32 px tiles), pixel-shuffle connector, Llama decoder.

Each tile gives (32 / 8)^2 / 2^2 = 4 image tokens. Image splitting is off by default (one 32 px view per image);
pass do_image_splitting=True for rows x cols tiles of 32 px plus the global view. The SmolVLM processor cannot
be built here (it needs num2words and a torchvision video processor), so its folder gets the image processor,
the tokenizer and a processor_config.json with image_seq_len, which is what SmolVLMAdapter reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    Idefics3VisionConfig,
    LlamaConfig,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMImageProcessorPil,
    SmolVLMVisionConfig,
)

from lingudistill.tiny.common import TINY_TEXT, save_teacher
from lingudistill.tiny.tokenizer import DEFAULT_WORDS, build_tokenizer

TILE = 32
PATCH_SIZE = 8
SCALE_FACTOR = 2
IMAGE_SEQ_LEN = (TILE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2
SPECIALS = (
    "<fake_token_around_image>",
    "<global-img>",
    "<end_of_utterance>",
    *(f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)),
)


def build_idefics3(
    folder: Path,
    *,
    flavour: str = "idefics3",
    do_image_splitting: bool = False,
    words: tuple[str, ...] = DEFAULT_WORDS,
    seed: int = 0,
    text_overrides: dict | None = None,
    teacher_matches_student: bool = True,
) -> tuple[Path, Path]:
    """Save a tiny Idefics3 (flavour="idefics3") or SmolVLM ("smolvlm") student and its Llama teacher."""
    tokenizer = build_tokenizer(words, image_placeholder="<image>", extra_specials=SPECIALS)
    text_config = LlamaConfig(
        **{**TINY_TEXT, "vocab_size": len(tokenizer), **(text_overrides or {})},
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    smol = flavour == "smolvlm"
    vision_config = (SmolVLMVisionConfig if smol else Idefics3VisionConfig)(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=TILE,
        patch_size=PATCH_SIZE,
    )
    config = (SmolVLMConfig if smol else Idefics3Config)(
        vision_config=vision_config,
        text_config=text_config,
        scale_factor=SCALE_FACTOR,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    student = (SmolVLMForConditionalGeneration if smol else Idefics3ForConditionalGeneration)(config)
    image_processor = (SmolVLMImageProcessorPil if smol else Idefics3ImageProcessorPil)(
        size={"longest_edge": 2 * TILE},
        max_image_size={"longest_edge": TILE},
        do_image_splitting=do_image_splitting,
    )
    student_dir, teacher_dir = folder / "student", folder / "teacher"
    student.save_pretrained(student_dir)
    if smol:
        image_processor.save_pretrained(student_dir)
        tokenizer.save_pretrained(student_dir)
        settings = {"processor_class": "SmolVLMProcessor", "image_seq_len": IMAGE_SEQ_LEN}
        (student_dir / "processor_config.json").write_text(json.dumps(settings))
    else:
        processor = Idefics3Processor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            image_seq_len=IMAGE_SEQ_LEN,
            chat_template=tokenizer.chat_template,
        )
        processor.save_pretrained(student_dir)
    save_teacher(text_config, tokenizer, teacher_dir, student if teacher_matches_student else None, seed + 1)
    return student_dir, teacher_dir
