"""A tiny InternVL: InternViT tower on 32 px tiles, pixel-shuffle + MLP projector, Qwen2 decoder.

Each tile gives (32 / 8)^2 patches, pixel-shuffled by 0.5 into 4 image tokens; as in InternVL, an image is cropped
into tiles after its aspect ratio (at most 4 here) plus a thumbnail. Vocabulary as InternVL3 over Qwen2.5: <img>,
</img>, <IMG_CONTEXT> and the other tokens InternVL adds come after the teacher's ids, and the student's lm_head
has its tokenizer's rows, fewer than the teacher's padded head (151674 against 151936).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GotOcr2ImageProcessorPil, InternVLConfig, InternVLForConditionalGeneration, Qwen2Config

from lingudistill.models.families.internvl import ImageOnlyInternVLProcessor
from lingudistill.tiny.common import PEAKED_INIT, TINY_TEXT, padded_rows, save_teacher, tiny_vocab
from lingudistill.tiny.tokenizer import DEFAULT_WORDS

TILE = 32
PATCH_SIZE = 8
IMAGE_SEQ_LENGTH = (TILE // PATCH_SIZE) ** 2 // 4
IMAGE_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>"}
OTHER_TOKENS = ("<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>", "<video>")


def build_internvl(
    folder: Path,
    *,
    words: tuple[str, ...] = DEFAULT_WORDS,
    seed: int = 0,
    text_overrides: dict | None = None,
    teacher_matches_student: bool = True,
) -> tuple[Path, Path]:
    """Save a tiny InternVL student to folder/student and its Qwen2 teacher to folder/teacher."""
    vocab = tiny_vocab(
        words,
        image_placeholder=IMAGE_TOKENS["context_image_token"],
        student_only=(IMAGE_TOKENS["start_image_token"], IMAGE_TOKENS["end_image_token"], *OTHER_TOKENS),
        rows="tokenizer",
    )
    tokenizer = vocab.student
    tokenizer._set_model_specific_special_tokens({**IMAGE_TOKENS, "video_token": "<video>"})
    text_config = Qwen2Config(
        **{**TINY_TEXT, "vocab_size": vocab.student_rows, **(text_overrides or {})},
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = InternVLConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": [TILE, TILE],
            "patch_size": [PATCH_SIZE, PATCH_SIZE],
        },
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["context_image_token"]),
        image_seq_length=IMAGE_SEQ_LENGTH,
        tie_word_embeddings=False,
        initializer_range=PEAKED_INIT,
    )
    torch.manual_seed(seed)
    student = InternVLForConditionalGeneration(config)
    processor = ImageOnlyInternVLProcessor(
        image_processor=GotOcr2ImageProcessorPil(size={"height": TILE, "width": TILE}, max_patches=4),
        tokenizer=tokenizer,
        image_seq_length=IMAGE_SEQ_LENGTH,
        chat_template=tokenizer.chat_template,
    )
    student_dir, teacher_dir = folder / "student", folder / "teacher"
    student.save_pretrained(student_dir)
    processor.save_pretrained(student_dir)
    teacher = student if teacher_matches_student else None
    teacher_rows = padded_rows(vocab.student_rows + 16)  # the teacher's head is padded past the student's
    save_teacher(text_config, vocab.teacher, teacher_dir, teacher, seed + 1, vocab_rows=teacher_rows)
    return student_dir, teacher_dir
