"""Shared checks of METHOD.md's identities, used by every family's test module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from PIL import Image

from lingudistill.data.records import Record, parse_record
from lingudistill.models.compat import shared_vocab_size
from lingudistill.models.encoding import Encoder, collate
from lingudistill.models.loading import Student, Teacher, load_student, load_teacher
from lingudistill.objective import DistillationObjective
from lingudistill.spec import MethodSpec
from lingudistill.tiny.gemma3 import build_gemma3
from lingudistill.tiny.idefics3 import build_idefics3
from lingudistill.tiny.internvl import build_internvl
from lingudistill.tiny.llava import build_llava
from lingudistill.tiny.llava_next import build_llava_next
from lingudistill.tiny.llava_onevision import build_llava_onevision
from lingudistill.tiny.paligemma import build_paligemma
from lingudistill.tiny.qwen_vl import FAMILIES as QWEN_VL_FAMILIES
from lingudistill.tiny.qwen_vl import build_qwen_vl


def sample_records(folder: Path) -> list[Record]:
    """An image record, a text record with two assistant turns, and a second image record of another length."""
    Image.new("RGB", (40, 30), "red").save(folder / "red.png")
    Image.new("RGB", (24, 48), "blue").save(folder / "blue.png")
    raw = [
        {"prompt": "what colour is the square ?", "response": "the square is red .", "images": ["red.png"]},
        {
            "messages": [
                {"role": "user", "content": "what is two plus two ?"},
                {"role": "assistant", "content": "four"},
                {"role": "user", "content": "and three plus three ?"},
                {"role": "assistant", "content": "six . the answer is six"},
            ]
        },
        {"prompt": "is the picture blue ?", "response": "yes it is blue", "images": ["blue.png"]},
    ]
    return [parse_record(r, source="mix", origin=f"inline:{i + 1}", base_dir=folder) for i, r in enumerate(raw)]


def later_turn_records(folder: Path) -> list[Record]:
    """Images in several user turns: the second answer's prompt holds an image after the first answer, which the
    teacher in prompt mode reads from the student's K/V, not from its cache. Uses sample_records' images."""

    def turn(text: str, image: bool) -> dict:
        return {"role": "user", "content": [*([{"type": "image"}] if image else []), {"type": "text", "text": text}]}

    raw = [
        {
            "messages": [
                turn("what colour is the square ?", True),
                {"role": "assistant", "content": "red"},
                turn("and this picture ?", True),
                {"role": "assistant", "content": "it is blue ."},
            ],
            "images": ["red.png", "blue.png"],
        },
        {
            "messages": [
                turn("what is two plus two ?", False),
                {"role": "assistant", "content": "four"},
                turn("what colour is it ?", True),
                {"role": "assistant", "content": "blue"},
                turn("and this square ?", True),
                {"role": "assistant", "content": "the square is red ."},
            ],
            "images": ["blue.png", "red.png"],
        },
    ]
    return [parse_record(r, source="turns", origin=f"inline:{i + 1}", base_dir=folder) for i, r in enumerate(raw)]


def load_pair(student_dir: Path, teacher_dir: Path) -> tuple[Student, Teacher]:
    return load_student(str(student_dir)), load_teacher(str(teacher_dir))


def kd_of(student: Student, teacher: Teacher, records: list[Record], mode: str = "prompt", **batch_overrides):
    """Summed per-token KD and CE over the records as one batch, every record distilled."""
    encoder = Encoder(student.adapter, student.processor, max_seq_len=512)
    batch = collate([encoder.encode(r, distill=True) for r in records], student.adapter, pad_token_id=0)
    batch.update(batch_overrides)
    method = MethodSpec(kv_sharing=mode)
    objective = DistillationObjective(student.model, teacher.model, student.adapter, method, shared_vocab_size(teacher))
    with torch.no_grad():
        loss = objective(batch, ce_normalizer=1.0, kd_normalizer=1.0)
    return float(loss.parts.kd_sum), float(loss.parts.ce_sum), batch


def assert_prompt_identity(student: Student, teacher: Teacher, records: list[Record]) -> float:
    """Identity 1: equal decoders give KD <= 1e-6 in prompt mode, with images in the prompt. Returns the KD."""
    kd, ce, batch = kd_of(student, teacher, records, "prompt")
    assert (batch["mm_token_type_ids"] > 0).any(), "the batch must hold image tokens"
    assert ce > 0
    assert kd <= 1e-6, f"KD {kd} with identical decoders: the hand-over of the prompt cache is wrong"
    return kd


def images_after_the_prompt(student: Student, records: list[Record]) -> int:
    """Image tokens of the batch that lie after the shared prompt end S (in the teacher's continuation)."""
    encoder = Encoder(student.adapter, student.processor, max_seq_len=512)
    batch = collate([encoder.encode(r, distill=True) for r in records], student.adapter, pad_token_id=0)
    return int((batch["mm_token_type_ids"][:, batch["prompt_length"] - 1 :] > 0).sum())


def assert_wrong_positions_break_identity(student: Student, teacher: Teacher, records: list[Record]) -> float:
    """The identity is sensitive: the same batch with the teacher's positions off by one gives KD well above 0
    (above 1e-2: peaked attention makes a one-position error plain). Returns the KD."""
    adapter = student.adapter
    original = adapter.teacher_position_ids
    adapter.teacher_position_ids = lambda positions: original(positions) + 1  # type: ignore[method-assign]
    try:
        kd, _, _ = kd_of(student, teacher, records, "prompt")
    finally:
        adapter.teacher_position_ids = original  # type: ignore[method-assign]
    assert kd > 1e-2, f"KD {kd}: a wrong position barely changes the teacher, so identity 1 proves nothing"
    return kd


def causal_token_types(batch):
    """token_type_ids that make the whole sequence a causal suffix (PaliGemma's prefix, made causal)."""
    return torch.ones_like(batch["input_ids"])


def perturb_decoder(student: Student, scale: float = 0.05, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in student.adapter.decoder(student.model).parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)


def train_on(student: Student, teacher: Teacher, records: list[Record], steps: int, lr: float = 1e-3) -> None:
    """A few optimiser steps of the KD objective (prompt mode) on one batch: only the student is trained."""
    encoder = Encoder(student.adapter, student.processor, max_seq_len=512)
    batch = collate([encoder.encode(r, distill=True) for r in records], student.adapter, pad_token_id=0)
    objective = DistillationObjective(
        student.model, teacher.model, student.adapter, MethodSpec(ce_weight=0.0), shared_vocab_size(teacher)
    )
    trainable = [p for p in student.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr)
    student.model.train()
    for _ in range(steps):
        tokens = float((batch["labels"][:, 1:] != -100).sum())
        objective(batch, ce_normalizer=tokens, kd_normalizer=tokens).parts.total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    student.model.eval()


def assert_left_padding_keeps_hidden_states(student, records, atol: float = 1e-5) -> None:
    """Each row of a left-padded batch has, at its real tokens, the student hidden states of the example alone."""
    adapter, model = student.adapter, student.model
    encoder = Encoder(adapter, student.processor, max_seq_len=512)
    examples = [encoder.encode(r, distill=True) for r in records]

    def hidden(batch):
        positions = adapter.position_ids(model, batch)
        with torch.no_grad():
            return adapter.base_forward(model)(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                position_ids=positions,
                use_cache=False,
                **adapter.forward_kwargs(batch),
            ).last_hidden_state

    batch = collate(examples, adapter, pad_token_id=0)
    assert not bool(batch["attention_mask"].all()), "the batch must hold left padding"
    together = hidden(batch)
    for row, example in enumerate(examples):
        alone = hidden(collate([example], adapter, pad_token_id=0))[0]
        start = batch["prompt_length"] - example.prompt_length
        got = together[row, start : start + len(example.input_ids)]
        torch.testing.assert_close(got, alone, atol=atol, rtol=0, msg=lambda m, row=row: f"row {row}: {m}")


@dataclass(frozen=True)
class TinyFamily:
    """How to build one tiny family/variant, and what METHOD.md's identities give for it.

    visual_modes_exact: with equal decoders the visual and visual_system modes give KD <= 1e-6. False for PaliGemma,
    whose bidirectional prefix makes those modes inexact (see test_identities.py); there a causal prefix restores
    exactness instead.
    """

    build: Callable[[Path], tuple[Path, Path]]
    visual_modes_exact: bool = True


FAMILIES: dict[str, TinyFamily] = {
    "llava-llama": TinyFamily(partial(build_llava, decoder="llama")),
    "llava-qwen2": TinyFamily(partial(build_llava, decoder="qwen2")),
    **{family: TinyFamily(partial(build_qwen_vl, family=family)) for family in QWEN_VL_FAMILIES},
    "idefics3-whole": TinyFamily(partial(build_idefics3, flavour="idefics3", do_image_splitting=False)),
    "idefics3-tiles": TinyFamily(partial(build_idefics3, flavour="idefics3", do_image_splitting=True)),
    "smolvlm-whole": TinyFamily(partial(build_idefics3, flavour="smolvlm", do_image_splitting=False)),
    "paligemma": TinyFamily(partial(build_paligemma, decoder="gemma"), visual_modes_exact=False),
    # PaliGemma2 (Gemma2 decoder): Gemma2 has no SDPA (its attention-logit softcapping exists only in its eager
    # attention), so the K/V tap runs over the model's own eager attention.
    "paligemma2": TinyFamily(partial(build_paligemma, decoder="gemma2"), visual_modes_exact=False),
    "gemma3": TinyFamily(build_gemma3),
    "llava-onevision": TinyFamily(build_llava_onevision),
    # Real vocabulary relations (METHOD.md, "Vocabularies"): the student's tokenizer extends the teacher's.
    "smolvlm-vocab": TinyFamily(partial(build_idefics3, flavour="smolvlm", extended_vocab=True)),
    "llava-1.5-vocab": TinyFamily(partial(build_llava, decoder="llama", extended_vocab=True)),
    "paligemma-vocab": TinyFamily(partial(build_paligemma, decoder="gemma", extended_vocab=True), False),
    "qwen2_vl-vocab": TinyFamily(partial(build_qwen_vl, family="qwen2_vl", extended_vocab=True)),
    # InternVL3 over Qwen2.5 and LLaVA-NeXT over Vicuna, with their real vocabulary relations.
    "internvl": TinyFamily(build_internvl),
    "llava-next": TinyFamily(build_llava_next),
}


@dataclass
class Tiny:
    """A built tiny family: its loaded student and teacher, the sample records, and where they were saved."""

    student: Student
    teacher: Teacher
    records: list[Record]
    student_dir: Path
    teacher_dir: Path
    later_turns: list[Record]  # images in several user turns

    @property
    def pair(self) -> tuple[Student, Teacher, list[Record]]:
        return self.student, self.teacher, self.records


class TinyFamilies:
    """Builds each tiny family once per session, on first use."""

    def __init__(self, tmp_path_factory) -> None:
        self._factory = tmp_path_factory
        self._built: dict[str, Tiny] = {}

    def __call__(self, name: str) -> Tiny:
        if name not in self._built:
            folder = self._factory.mktemp(name)
            student_dir, teacher_dir = FAMILIES[name].build(folder)
            student, teacher = load_pair(student_dir, teacher_dir)
            records = sample_records(folder)
            self._built[name] = Tiny(
                student, teacher, records, student_dir, teacher_dir, later_turn_records(folder) + records[:1]
            )
        return self._built[name]
