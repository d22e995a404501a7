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

from lingudistill.tiny.common import TINY_TEXT, save_teacher, tiny_vocab
from lingudistill.tiny.tokenizer import DEFAULT_WORDS

TILE = 32
PATCH_SIZE = 8
SCALE_FACTOR = 2
IMAGE_SEQ_LEN = (TILE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2
SPECIALS = (
    "<image>",
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
    extended_vocab: bool = False,
) -> tuple[Path, Path]:
    """Save a tiny Idefics3 (flavour="idefics3") or SmolVLM ("smolvlm") student and its Llama teacher.

    extended_vocab: SmolVLM over SmolLM2: <image>, the row/column and the other image tokens are appended to the
    teacher's tokenizer (49280 over 49152), and each lm_head has its own tokenizer's rows."""
    vocab = tiny_vocab(
        words, image_placeholder="<image>", student_only=SPECIALS, rows="tokenizer" if extended_vocab else "same"
    )
    tokenizer = vocab.student
    text_config = LlamaConfig(
        **{**TINY_TEXT, "vocab_size": vocab.student_rows, **(text_overrides or {})},
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
    teacher = student if teacher_matches_student else None
    save_teacher(text_config, vocab.teacher, teacher_dir, teacher, seed + 1, vocab_rows=vocab.teacher_rows)
    return student_dir, teacher_dir
