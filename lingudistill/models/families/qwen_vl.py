"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: multimodal rope, a patch-merger projector, image-only processors.

Layout (transformers 5.x): model.model.visual (vision blocks + `merger`, and in Qwen3-VL the deepstack mergers),
model.model.language_model (the decoder), model.lm_head.

Positions: the decoder takes multimodal rope positions [3, batch, seq] (temporal, height, width) from the model's
own `get_rope_index`, which skips left padding. Text tokens carry the same value in all three rows, and for the
text after an image that value is not the token's index (the image advances it by max(h, w) / merge, not by its
token count). A text-only teacher continues with the temporal row, which for text equals the other two, so its
ordinary rope gives exactly the student's rotation.

Processor: the families' processor classes require a video processor, which needs torchvision. `load_processor`
builds the real processor class without its video slot, so the image-token expansion, the replacement offsets and
mm_token_type_ids come from transformers' own code, as for a full checkpoint.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel, Qwen2_5_VLProcessor, Qwen2VLProcessor, Qwen3VLProcessor
from transformers.processing_utils import ProcessorMixin

from lingudistill.models.families.base import FamilyAdapter


@cache
def image_only_processor_class(processor_class: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """`processor_class` without its video processor: same name (so saved configs name the real class) and code.

    ProcessorMixin takes its sub-processors from the `__init__` signature, so an `__init__` without
    `video_processor` makes it load, check and save only the image processor and the tokenizer.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):  # type: ignore[no-untyped-def]
        processor_class.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return type(processor_class.__name__, (processor_class,), {"__init__": __init__, "__module__": __name__})


class QwenVLAdapter(FamilyAdapter):
    """Qwen2-VL and Qwen2.5-VL (Qwen2 decoder, teacher Qwen2ForCausalLM)."""

    name = "qwen2_vl"
    model_types = ("qwen2_vl", "qwen2_5_vl")
    image_input_keys = ("pixel_values", "image_grid_thw")
    processor_classes: ClassVar[dict[str, type[ProcessorMixin]]] = {
        "qwen2_vl": Qwen2VLProcessor,
        "qwen2_5_vl": Qwen2_5_VLProcessor,
        "qwen3_vl": Qwen3VLProcessor,
    }
    # Children of model.model.visual that map vision features into the decoder's space.
    projector_modules: ClassVar[tuple[str, ...]] = ("merger",)

    # --- where things live ---------------------------------------------------------------------------------
    def projector(self, model: PreTrainedModel) -> nn.Module:
        visual = model.model.visual
        return nn.ModuleList([getattr(visual, name) for name in self.projector_modules])

    def vision(self, model: PreTrainedModel) -> nn.Module:
        """The vision tower without its merger(s), which are the projector and train with their own rate."""
        visual = model.model.visual
        if any(True for _ in visual.parameters(recurse=False)):
            raise TypeError(f"{type(visual).__name__} holds parameters of its own; the adapter cannot split it")
        return nn.ModuleDict(
            {name: child for name, child in visual.named_children() if name not in self.projector_modules}
        )

    # --- inputs ---------------------------------------------------------------------------------------------
    def load_processor(self, location: str | Path, **kwargs: Any) -> Any:
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(location, trust_remote_code=False, **kwargs).model_type
        processor_class = image_only_processor_class(self.processor_classes[model_type])
        return processor_class.from_pretrained(location, trust_remote_code=False, **kwargs)

    def position_ids(self, model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Multimodal rope positions [3, batch, seq] from the model's get_rope_index (left padding skipped)."""
        positions, _ = model.model.get_rope_index(
            batch["input_ids"],
            batch["mm_token_type_ids"],
            image_grid_thw=batch.get("image_grid_thw"),
            attention_mask=batch["attention_mask"],
        )
        return positions

    def teacher_position_ids(self, student_positions: torch.Tensor) -> torch.Tensor:
        """The temporal row: on text tokens all three rows agree, so the teacher's 1-D rope matches exactly."""
        return student_positions[0]


class Qwen3VLAdapter(QwenVLAdapter):
    """Qwen3-VL (Qwen3 decoder with q/k norms, interleaved mrope, deepstack; teacher Qwen3ForCausalLM).

    Deepstack adds visual features to the decoder's hidden states at image positions after its first layers; the
    K/V of text positions are the ordinary ones, so the prompt hand-over is unchanged.
    """

    name = "qwen3_vl"
    model_types = ("qwen3_vl",)
    projector_modules = ("merger", "deepstack_merger_list")
