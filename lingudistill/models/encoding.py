"""Records to tensors: the student's chat template and processor build the prompt; only assistant tokens get labels.

The processor expands each image placeholder into the model's image tokens and reports where it did so
(`return_text_replacement_offsets`), and the fast tokenizer reports each token's character span. Assistant
turns are located in the rendered chat text, shifted by the expansions before them, and every token inside
one carries its label. This works unchanged for every family whose processor follows transformers' unified
multimodal processing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lingudistill.data.records import DataError, Record, load_image
from lingudistill.models.families.base import FamilyAdapter

IGNORE = -100


@dataclass
class Example:
    """One encoded record. `labels[t]` is input_ids[t] on assistant tokens and IGNORE elsewhere."""

    input_ids: torch.Tensor  # [L] long
    labels: torch.Tensor  # [L] long
    mm_token_type_ids: torch.Tensor  # [L] long: 0 text, 1 image
    images: dict[str, torch.Tensor] = field(default_factory=dict)
    source: str = ""
    distill: bool = False

    @property
    def prompt_length(self) -> int:
        """P: the index of the first response token."""
        return int((self.labels != IGNORE).nonzero()[0, 0])


class Encoder:
    """Turns records into Examples with the student's processor."""

    def __init__(self, adapter: FamilyAdapter | None, processor: Any, max_seq_len: int) -> None:
        """`adapter` is None for a text-only model, whose `processor` is then its tokenizer."""
        self.adapter = adapter
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.max_seq_len = max_seq_len

    def encode(self, record: Record, *, distill: bool = False) -> Example:
        if self.adapter is not None:
            text, spans = self.adapter.render_record(self, record)
        else:
            text, spans = self.render_with_assistant_spans(record)
        images = [load_image(ref) for ref in record.images]
        out = self._process(text, images, record)
        expanded = _shift_spans(spans, out.get("text_replacement_offsets", [[]])[0] if images else [])
        input_ids = out["input_ids"][0]
        labels = _label_assistant_tokens(input_ids, out["offset_mapping"][0], expanded)
        mm_types = out.get("mm_token_type_ids")
        mm_types = mm_types[0].long() if mm_types is not None else torch.zeros_like(input_ids)
        keys = self.adapter.image_input_keys if self.adapter else ()
        image_tensors = {k: out[k] for k in keys if k in out and images}
        example = Example(input_ids.long(), labels, mm_types, image_tensors, record.source, distill)
        return self._truncate(example, record)

    def _process(self, text: str, images: list, record: Record) -> Any:
        options = dict(return_offsets_mapping=True, add_special_tokens=False, return_tensors="pt")
        if self.processor is self.tokenizer:  # a text-only model (the teacher)
            if images:
                raise DataError(f"{record.source} {record.origin}: a text-only model cannot read images")
            return self.tokenizer([text], **options)
        return (self.adapter or FamilyAdapter()).process(self.processor, text, images, **options)

    def render(self, messages: list[dict], *, add_generation_prompt: bool) -> str:
        owner = self.processor if getattr(self.processor, "chat_template", None) else self.tokenizer
        return owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def render_with_assistant_spans(self, record: Record) -> tuple[str, list[tuple[int, int]]]:
        """The chat text and the character span of each assistant turn's content in it."""
        messages = record.messages
        full = self.render(messages, add_generation_prompt=False)
        spans = []
        for k, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = self.render(messages[:k], add_generation_prompt=True) if k else ""
            through = self.render(messages[: k + 1], add_generation_prompt=False)
            if not (full.startswith(through) and through.startswith(before)):
                raise DataError(
                    f"{record.source} {record.origin}: the chat template does not render turn by turn "
                    "(a prefix of the conversation renders differently), so the assistant tokens cannot be located"
                )
            spans.append((len(before), len(through.rstrip())))
        return full, spans

    def _truncate(self, example: Example, record: Record) -> Example:
        has_labels = bool((example.labels != IGNORE).any())
        if not has_labels:
            raise DataError(f"{record.source} {record.origin}: no assistant token survived tokenisation")
        limit = self.adapter.distilled_prompt_limit() if self.adapter is not None and example.distill else None
        if limit is not None and example.prompt_length > limit[0]:
            raise DataError(
                f"{record.source} {record.origin}: the prompt is {example.prompt_length} tokens (images included), "
                f"longer than {limit[1]}"
            )
        if example.prompt_length >= self.max_seq_len:
            raise DataError(
                f"{record.source} {record.origin}: the prompt is {example.prompt_length} tokens (images included), "
                f"at least max_seq_len={self.max_seq_len}; raise training.max_seq_len"
            )
        if len(example.input_ids) > self.max_seq_len:
            n = self.max_seq_len
            example.input_ids, example.labels = example.input_ids[:n], example.labels[:n]
            example.mm_token_type_ids = example.mm_token_type_ids[:n]
        return example


def _shift_spans(spans: list[tuple[int, int]], replacements: list[dict]) -> list[tuple[int, int]]:
    """Map character spans of the rendered text into the text after image-placeholder expansion."""

    def shift(pos: int) -> int:
        delta = 0
        for r in replacements:
            (old_start, old_end), (new_start, new_end) = r["span"], r["new_span"]
            if old_end <= pos:
                delta += (new_end - new_start) - (old_end - old_start)
        return pos + delta

    return [(shift(a), shift(b)) for a, b in spans]


def _label_assistant_tokens(
    input_ids: torch.Tensor, offsets: torch.Tensor, spans: list[tuple[int, int]]
) -> torch.Tensor:
    labels = torch.full_like(input_ids, IGNORE)
    for i, (start, end) in enumerate(offsets.tolist()):
        if end > start and any(a <= start and end <= b for a, b in spans):
            labels[i] = input_ids[i]
    return labels


def collate(examples: list[Example], adapter: FamilyAdapter, pad_token_id: int) -> dict[str, Any]:
    """Batch examples so that every prompt ends at the same index.

    Prompts are left-padded to the longest prompt P and responses right-padded, so position S = P - 1 is the
    last prompt token in every row: the teacher can then continue the whole batch from one shared cache.
    """
    prompt_lengths = [ex.prompt_length for ex in examples]
    prompt_end = max(prompt_lengths)
    length = max(prompt_end - p + len(ex.input_ids) for p, ex in zip(prompt_lengths, examples, strict=True))
    batch_size = len(examples)
    input_ids = torch.full((batch_size, length), pad_token_id, dtype=torch.long)
    labels = torch.full((batch_size, length), IGNORE, dtype=torch.long)
    mm_types = torch.zeros((batch_size, length), dtype=torch.long)
    mask = torch.zeros((batch_size, length), dtype=torch.long)
    for row, (p, ex) in enumerate(zip(prompt_lengths, examples, strict=True)):
        start = prompt_end - p
        end = start + len(ex.input_ids)
        input_ids[row, start:end] = ex.input_ids
        labels[row, start:end] = ex.labels
        mm_types[row, start:end] = ex.mm_token_type_ids
        mask[row, start:end] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "labels": labels,
        "mm_token_type_ids": mm_types,
        "prompt_length": prompt_end,
        "sources": [ex.source for ex in examples],
        "distill": torch.tensor([ex.distill for ex in examples], dtype=torch.bool),
        **adapter.collate_images([ex.images for ex in examples]),
    }
