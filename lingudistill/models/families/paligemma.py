"""PaliGemma and PaliGemma2 (google/paligemma*-*): SigLIP tower, linear projector, Gemma or Gemma2 decoder.

PaliGemma is a prefix-LM without a chat template. Its processor builds

    <image> x image_seq_length (per image)  <bos>  prefix  "\\n"  suffix  <eos>

and the model attends bidirectionally over the prefix (images, bos, prompt, "\\n") and causally over the suffix,
driven by token_type_ids (0 prefix, 1 suffix). Its positions count from 1 (the cumulative sum of the mask).

A record becomes prefix and suffix here (`render_record`): the suffix is the last assistant turn, the prefix is
every turn before it, one per line. Earlier assistant turns stay unlabelled context: inside a bidirectional
prefix a token sees its successor, so it cannot be trained to predict it. The text is tokenised and the image
tokens expanded as the processor does (`process`), without its prompt rewriting, so that the Encoder can label the
suffix by character spans; the processor refuses text-only rows, which this path accepts.

After collation every prompt ends at the shared index P - 1, so token_type_ids are simply 1 from P on.

KV sharing, `prompt` mode: exact. The teacher's first query is the last prefix token S = P - 1, which in the
student sees the whole prefix [0, S] and in the teacher sees its cache [0, S) and itself; later suffix tokens are
causal in both. (PaliGemma2's sliding layers: the student's prefix tokens see the whole prefix whatever the
window, the teacher's query at S only its window, so prompt mode is exact when the prefix fits in the window:
`distilled_prompt_limit` refuses longer distilled prefixes.)

`visual` modes are not exact: the student's text prefix tokens attend to later prefix tokens, the teacher's run
causally over its own embeddings, so even with equal decoders their K/V at donated-to positions differ.
"""

from __future__ import annotations

from typing import Any

import torch

from lingudistill.data.records import DataError, Record
from lingudistill.models.families.base import FamilyAdapter

IMAGE_TOKEN = "<image>"


class PaliGemmaAdapter(FamilyAdapter):
    name = "paligemma"
    model_types = ("paligemma",)

    def distilled_prompt_limit(self) -> tuple[int, str] | None:
        text = self.config.get_text_config(decoder=True) if self.config is not None else None
        window = getattr(text, "sliding_window", None)
        if window is None or "sliding_attention" not in (getattr(text, "layer_types", None) or ()):
            return None
        reason = (
            f"the decoder's sliding window of {window} tokens: the student's bidirectional prefix sees past it, the "
            "teacher's continuation cannot, so KV sharing would be inexact; shorten the prompt or set distill: false"
        )
        return int(window), reason

    # --- inputs ---------------------------------------------------------------------------------------------
    def position_ids(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """PaliGemma's positions count from 1; left padding stays at 0."""
        return batch["attention_mask"].long().cumsum(-1)

    def forward_kwargs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        kwargs = super().forward_kwargs(batch)
        length = batch["input_ids"].shape[1]
        suffix = torch.arange(length, device=batch["input_ids"].device) >= batch["prompt_length"]
        kwargs["token_type_ids"] = suffix.long().expand_as(batch["input_ids"])
        return kwargs

    # --- encoding -------------------------------------------------------------------------------------------
    def render_record(self, encoder: Any, record: Record) -> tuple[str, list[tuple[int, int]]]:
        tokenizer = encoder.tokenizer
        messages = record.messages
        last = max((k for k, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None:
            raise DataError(f"{record.source} {record.origin}: no assistant turn to use as PaliGemma's suffix")
        prefix_lines, n_images = [], 0
        for message in messages[:last]:
            text, images = _flatten(message["content"])
            prefix_lines.append(text)
            n_images += images
        response, response_images = _flatten(messages[last]["content"])
        if response_images or n_images != len(record.images):
            raise DataError(f"{record.source} {record.origin}: PaliGemma reads images in the prompt turns only")
        prefix = IMAGE_TOKEN * n_images + tokenizer.bos_token + "\n".join(prefix_lines) + "\n"
        text = prefix + response + tokenizer.eos_token
        return text, [(len(prefix), len(text))]

    def process(self, processor: Any, text: str, images: list, **options: Any) -> Any:
        """What PaliGemmaProcessor does to an already laid-out text: expand <image>, tokenise, process images."""
        tokenizer = processor.tokenizer
        expansion = IMAGE_TOKEN * processor.image_seq_length
        replacements, pieces, cursor, shift = [], [], 0, 0
        while (found := text.find(IMAGE_TOKEN, cursor)) >= 0:
            pieces += [text[cursor:found], expansion]
            span = (found, found + len(IMAGE_TOKEN))
            new_span = (found + shift, found + shift + len(expansion))
            replacements.append({"type": "image", "span": span, "new_span": new_span})
            shift += len(expansion) - len(IMAGE_TOKEN)
            cursor = span[1]
        expanded = "".join([*pieces, text[cursor:]])
        out = dict(tokenizer([expanded], **options))
        image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        out["mm_token_type_ids"] = (out["input_ids"] == image_token_id).long()
        out["text_replacement_offsets"] = [replacements]
        if images:
            out["pixel_values"] = processor.image_processor(images, return_tensors="pt")["pixel_values"]
        return out


def _flatten(content: str | list[dict]) -> tuple[str, int]:
    """A message's text (parts joined by spaces) and its number of image parts."""
    if isinstance(content, str):
        return content, 0
    texts = [part["text"] for part in content if part["type"] == "text"]
    return " ".join(texts), sum(part["type"] == "image" for part in content)
