"""Can this teacher continue from this student's KV cache? Checked before any training."""

from __future__ import annotations

from typing import Any

from lingudistill.errors import UserInputError
from lingudistill.models.loading import Student, Teacher


class IncompatibleModels(UserInputError, ValueError):
    """Student decoder and teacher differ in a way that breaks KV sharing; the message names each mismatch."""


def _head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _kv_heads(config: Any) -> int:
    return getattr(config, "num_key_value_heads", None) or config.num_attention_heads


def mismatches(student: Student, teacher: Teacher) -> list[str]:
    text = student.adapter.text_config(student.model)
    lm = teacher.model.config
    student_vocab = student.adapter.lm_head(student.model).weight.shape[0]
    teacher_vocab = teacher.model.get_output_embeddings().weight.shape[0]
    student_tokenizer = getattr(student.processor, "tokenizer", student.processor)
    checks = [
        ("decoder layers", text.num_hidden_layers, lm.num_hidden_layers),
        ("key/value heads", _kv_heads(text), _kv_heads(lm)),
        ("head dimension", _head_dim(text), _head_dim(lm)),
        ("vocabulary (lm_head rows)", student_vocab, teacher_vocab),
        ("tokenizer vocabulary", len(student_tokenizer), len(teacher.tokenizer)),
    ]
    return [f"{what}: student {s}, teacher {t}" for what, s, t in checks if s != t]


def check_compatibility(student: Student, teacher: Teacher) -> None:
    problems = mismatches(student, teacher)
    if problems:
        raise IncompatibleModels(
            "the teacher cannot continue from the student's KV cache; mismatched " + "; ".join(problems)
        )
