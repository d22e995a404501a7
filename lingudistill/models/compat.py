"""Can this teacher continue from this student's KV cache? Checked before any training.

Shapes: the decoders must have the same layers, key/value heads and head size.
Vocabulary (METHOD.md): the student's tokenizer must extend the teacher's, the same token string at every id the
teacher knows; extra student ids come after them. The lm_heads may differ in rows (a student with more, or a
teacher whose head has untrained padding rows past its tokenizer); KD compares the shared ids only.
Attention: K/V are stored after rotary embedding, so the teacher must rotate, scale and mask as the student's
decoder does. A different rope (type, base, scaling, partial rotary factor) makes the hand-over inexact: refused,
unless the spec's `method.allow_rope_mismatch` accepts it with a warning. Attention scaling, logit softcapping,
the sliding window and the layer types are always refused when they differ.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from lingudistill.errors import UserInputError
from lingudistill.models.loading import Student, Teacher
from lingudistill.spec import MethodSpec

# Keys of a multimodal rope that a text-only teacher cannot have: its 1-D positions stand for them.
_MULTIMODAL_ROPE_KEYS = ("mrope_section", "mrope_interleaved")


class IncompatibleModels(UserInputError, ValueError):
    """Student decoder and teacher differ in a way that breaks KV sharing; the message names each mismatch."""


class InexactHandOver(UserWarning):
    """A mismatch the spec explicitly allowed: training runs, but the teacher's continuation is not exact."""


def _head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _kv_heads(config: Any) -> int:
    return getattr(config, "num_key_value_heads", None) or config.num_attention_heads


def _tokenizer(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


def shared_vocab_size(teacher: Teacher) -> int:
    """The ids KD compares: the teacher's tokenizer length (its lm_head may have untrained rows past it)."""
    return len(teacher.tokenizer)


def vocabulary_mismatches(student: Student, teacher: Teacher) -> list[str]:
    """Empty when the student's tokenizer extends the teacher's and both heads cover the teacher's ids."""
    student_tokens = _tokenizer(student.processor)
    shared = shared_vocab_size(teacher)
    if len(student_tokens) < shared:
        return [
            f"vocabulary: the student's tokenizer ({len(student_tokens)} tokens) must extend the teacher's "
            f"({shared} tokens), but it is shorter"
        ]
    ours = student_tokens.convert_ids_to_tokens(list(range(shared)))
    theirs = teacher.tokenizer.convert_ids_to_tokens(list(range(shared)))
    for token_id, (mine, its) in enumerate(zip(ours, theirs, strict=True)):
        if mine != its:
            return [
                f"vocabulary: token id {token_id} is {mine!r} in the student's tokenizer and {its!r} in the teacher's"
            ]
    rows = {
        "student lm_head": student.adapter.lm_head(student.model).weight.shape[0],
        "teacher lm_head": teacher.model.get_output_embeddings().weight.shape[0],
        "teacher embedding": teacher.model.get_input_embeddings().weight.shape[0],
    }
    return [
        f"vocabulary: the {what} has {n} rows, fewer than the teacher's {shared} tokens"
        for what, n in rows.items()
        if n < shared
    ]


def _rope(config: Any) -> Any:
    """The decoder's rope settings, without the multimodal sections a text-only teacher cannot have."""
    parameters = getattr(config, "rope_parameters", None) or {}
    if all(isinstance(v, dict) for v in parameters.values()) and parameters:  # per layer type (Gemma3)
        return {kind: _rope_entry(p, config) for kind, p in sorted(parameters.items())}
    return _rope_entry(parameters, config)


def _rope_entry(parameters: dict[str, Any], config: Any) -> dict[str, Any]:
    entry = {k: v for k, v in parameters.items() if k not in _MULTIMODAL_ROPE_KEYS and v is not None}
    if "rope_type" in entry:  # the legacy key, as Qwen2-VL checkpoints write it ({"type": "mrope"}), is its alias
        entry.pop("type", None)
    entry.setdefault("partial_rotary_factor", getattr(config, "partial_rotary_factor", None) or 1.0)
    return entry


def _layer_types(config: Any) -> list[str]:
    return list(getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers)


def _sliding_window(config: Any) -> int | None:
    """The window of the sliding layers, or None when no layer slides (Qwen2 keeps a window it does not use)."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        return None
    if getattr(config, "use_sliding_window", True) is False:
        return None
    return getattr(config, "sliding_window", None)


def _describe(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)


def rope_mismatch(student: Student, teacher: Teacher) -> str | None:
    text, lm = student.adapter.text_config(student.model), teacher.model.config
    mine, its = _rope(text), _rope(lm)
    return None if mine == its else f"rope: student {_describe(mine)}, teacher {_describe(its)}"


def attention_mismatches(student: Student, teacher: Teacher) -> list[str]:
    """Settings besides the rope that change what a layer's K/V mean to the next query."""
    text, lm = student.adapter.text_config(student.model), teacher.model.config
    checks = [
        ("attention scaling (query_pre_attn_scalar)", "query_pre_attn_scalar"),
        ("attention logit softcapping", "attn_logit_softcapping"),
    ]
    found = [
        (what, getattr(text, key, None), getattr(lm, key, None))
        for what, key in checks
        if getattr(text, key, None) != getattr(lm, key, None)
    ]
    if _sliding_window(text) != _sliding_window(lm):
        found.append(("sliding window", _sliding_window(text), _sliding_window(lm)))
    if _layer_types(text) != _layer_types(lm):
        found.append(("layer types", _layer_types(text), _layer_types(lm)))
    return [f"{what}: student {_describe(s)}, teacher {_describe(t)}" for what, s, t in found]


def mismatches(student: Student, teacher: Teacher) -> list[str]:
    """Every mismatch that forbids the hand-over, the rope's included."""
    text = student.adapter.text_config(student.model)
    lm = teacher.model.config
    checks = [
        ("decoder layers", text.num_hidden_layers, lm.num_hidden_layers),
        ("key/value heads", _kv_heads(text), _kv_heads(lm)),
        ("head dimension", _head_dim(text), _head_dim(lm)),
    ]
    shapes = [f"{what}: student {s}, teacher {t}" for what, s, t in checks if s != t]
    rope = rope_mismatch(student, teacher)
    return (
        shapes
        + vocabulary_mismatches(student, teacher)
        + ([rope] if rope else [])
        + attention_mismatches(student, teacher)
    )


def check_compatibility(student: Student, teacher: Teacher, method: MethodSpec | None = None) -> None:
    """Raise IncompatibleModels naming every mismatch; a rope mismatch the method allows only warns."""
    rope = rope_mismatch(student, teacher)
    problems = [p for p in mismatches(student, teacher) if p != rope]
    if rope and not (method is not None and method.allow_rope_mismatch):
        problems.append(rope + " (set method.allow_rope_mismatch: true to train anyway, inexactly)")
    if problems:
        raise IncompatibleModels(
            "the teacher cannot continue from the student's KV cache; mismatched " + "; ".join(problems)
        )
    if rope:
        warnings.warn(
            f"{rope}; allowed by method.allow_rope_mismatch, so the teacher's continuation is inexact",
            InexactHandOver,
            stacklevel=2,
        )
