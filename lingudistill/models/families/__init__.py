"""The registry of family adapters, keyed by the student's `config.model_type`."""

from __future__ import annotations

from typing import Any

from lingudistill.errors import UserInputError
from lingudistill.models.families.base import FamilyAdapter
from lingudistill.models.families.gemma3 import Gemma3Adapter
from lingudistill.models.families.idefics3 import Idefics3Adapter, SmolVLMAdapter
from lingudistill.models.families.internvl import InternVLAdapter
from lingudistill.models.families.llava import LlavaAdapter
from lingudistill.models.families.llava_next import LlavaNextAdapter
from lingudistill.models.families.llava_onevision import LlavaOnevisionAdapter
from lingudistill.models.families.paligemma import PaliGemmaAdapter
from lingudistill.models.families.qwen_vl import Qwen3VLAdapter, QwenVLAdapter

ADAPTERS: tuple[type[FamilyAdapter], ...] = (
    LlavaAdapter,
    Gemma3Adapter,
    PaliGemmaAdapter,
    Idefics3Adapter,
    SmolVLMAdapter,
    LlavaOnevisionAdapter,
    QwenVLAdapter,
    Qwen3VLAdapter,
    InternVLAdapter,
    LlavaNextAdapter,
)


class UnsupportedModel(UserInputError, ValueError):
    """The student's architecture has no adapter."""


def adapter_for(config: Any) -> FamilyAdapter:
    model_type = getattr(config, "model_type", None)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter(config)
    supported = sorted(t for a in ADAPTERS for t in a.model_types)
    raise UnsupportedModel(f"student model_type {model_type!r} is not supported; supported: {', '.join(supported)}")


__all__ = ["ADAPTERS", "FamilyAdapter", "UnsupportedModel", "adapter_for"]
