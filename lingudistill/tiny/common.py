"""Pieces shared by the tiny family builders."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast, SiglipVisionConfig

from lingudistill.tiny.tokenizer import CHATML_TEMPLATE, build_tokenizer, build_tokenizer_pair

# Peaked attention: with the default tiny initialisation attention is nearly uniform, and a wrong position
# or mask would hardly change the logits (METHOD.md). A larger init makes identity tests sensitive.
PEAKED_INIT = 0.2

TINY_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 512,
    "initializer_range": PEAKED_INIT,
    "tie_word_embeddings": False,
}


def tiny_siglip(image_size: int, patch_size: int, hidden: int = 32) -> SiglipVisionConfig:
    """A one-layer SigLIP vision tower: the vision side only has to produce image tokens, fast."""
    return SiglipVisionConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )


@dataclass(frozen=True)
class TinyVocab:
    """A tiny pair's tokenizers and lm_head rows. `extended` gives a real VLM's relation to its LM: the student's
    tokenizer is the teacher's plus its image tokens; otherwise both share one tokenizer and one row count."""

    student: PreTrainedTokenizerFast
    teacher: PreTrainedTokenizerFast
    student_rows: int
    teacher_rows: int


def tiny_vocab(
    words: tuple[str, ...],
    *,
    image_placeholder: str,
    student_only: tuple[str, ...] = (),
    extra_specials: tuple[str, ...] = (),
    chat_template: str = CHATML_TEMPLATE,
    rows: str = "same",
) -> TinyVocab:
    """rows: "same" (one tokenizer for both); "tokenizer" (each head has its tokenizer's rows: SmolVLM over
    SmolLM2); "padded" (the student's head padded past its tokenizer: LLaVA-1.5's 32064 over Vicuna's 32000);
    "equal" (both heads padded to the same rows, past both tokenizers: Qwen2-VL over Qwen2)."""
    if rows == "same":
        tokenizer = build_tokenizer(
            words,
            image_placeholder=image_placeholder,
            extra_specials=(*extra_specials, *student_only),
            chat_template=chat_template,
        )
        return TinyVocab(tokenizer, tokenizer, len(tokenizer), len(tokenizer))
    student, teacher = build_tokenizer_pair(
        words,
        image_placeholder=image_placeholder,
        student_only=student_only,
        extra_specials=extra_specials,
        chat_template=chat_template,
    )
    sizes = {
        "tokenizer": (len(student), len(teacher)),
        "padded": (padded_rows(len(student) + 1), len(teacher)),
        "equal": (padded_rows(len(student) + 1),) * 2,
    }
    if rows not in sizes:
        raise ValueError(f"unknown vocabulary relation {rows!r}; one of same, {', '.join(sizes)}")
    return TinyVocab(student, teacher, *sizes[rows])


def padded_rows(tokens: int, multiple: int = 16) -> int:
    """lm_head rows rounded up, as real checkpoints pad them (LLaVA-1.5's 32064, Qwen2's 151936)."""
    return -(-tokens // multiple) * multiple


def save_teacher(
    text_config: Any,
    tokenizer: PreTrainedTokenizerFast,
    folder: Path,
    student: PreTrainedModel | None,
    seed: int,
    *,
    vocab_rows: int | None = None,
) -> Path:
    """Save a text-only teacher LM; with `student`, its decoder and lm_head are copies of the student's on the
    teacher's ids. vocab_rows (default: the config's) sizes its embedding and lm_head; rows past its tokenizer
    stay random, like a real LM's untrained padding rows."""
    if vocab_rows is not None:
        text_config = copy.deepcopy(text_config)
        text_config.vocab_size = vocab_rows
    torch.manual_seed(seed)
    teacher = AutoModelForCausalLM.from_config(text_config)
    if student is not None:
        copy_decoder_into_teacher(student, teacher, shared=len(tokenizer))
    teacher.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def copy_decoder_into_teacher(student: PreTrainedModel, teacher: PreTrainedModel, shared: int | None = None) -> None:
    """Copy the student's decoder and lm_head into the teacher; embedding and lm_head rows only for the first
    `shared` ids (default: all rows, which must then be equal in number)."""
    from lingudistill.models.families import adapter_for

    adapter = adapter_for(student.config)
    weights = dict(adapter.decoder(student).state_dict())
    embedding = weights.pop("embed_tokens.weight")
    missing, unexpected = teacher.model.load_state_dict(weights, strict=False)
    if [m for m in missing if m != "embed_tokens.weight"] or unexpected:
        raise ValueError(f"teacher and student decoder differ: missing {missing}, unexpected {unexpected}")
    rows = slice(None) if shared is None else slice(0, shared)
    with torch.no_grad():
        teacher.get_input_embeddings().weight[rows] = embedding[rows]
        teacher.lm_head.weight[rows] = adapter.lm_head(student).weight[rows]
