"""Gemma3 (google/gemma-3-*-it): SigLIP tower, pooled projector, Gemma3 decoder with sliding-window layers.

Differences from LLaVA, all handled here:
- the processor returns the image-token types as `token_type_ids` (it renames `mm_token_type_ids`); the
  student's forward needs them, because the tokens of one image attend to each other bidirectionally. They are
  the batch's `mm_token_type_ids` (1 on `<image_soft_token>`), so the collated, padded copy is passed on.
- the teacher is Gemma3ForCausalLM. Its sliding-window mask is computed on sequence indices, and the teacher's
  cache holds all S prompt positions (padding included), so its window matches the student's; its embeddings
  carry the same sqrt(hidden) scale. Only image tokens attend bidirectionally and a prompt never ends inside an
  image, so the teacher's causal continuation from S sees exactly what the student's tokens see.
"""

from __future__ import annotations

from typing import Any

import torch

from lingudistill.models.families.base import FamilyAdapter


class Gemma3Adapter(FamilyAdapter):
    name = "gemma3"
    model_types = ("gemma3",)

    def process(self, processor: Any, text: str, images: list, **options: Any) -> Any:
        out = super().process(processor, text, images, **options)
        if "mm_token_type_ids" not in out and "token_type_ids" in out:
            out["mm_token_type_ids"] = out.pop("token_type_ids")
        return out

    def forward_kwargs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        kwargs = super().forward_kwargs(batch)
        kwargs["token_type_ids"] = batch["mm_token_type_ids"]
        return kwargs
