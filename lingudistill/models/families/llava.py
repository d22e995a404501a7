"""LLaVA (llava-hf layout) with a Llama, Qwen2 or other decoder: the base adapter's defaults fit it as is."""

from __future__ import annotations

from lingudistill.models.families.base import FamilyAdapter


class LlavaAdapter(FamilyAdapter):
    name = "llava"
    model_types = ("llava",)
