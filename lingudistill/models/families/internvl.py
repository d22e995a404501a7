"""InternVL (OpenGVLab/InternVL3-*-hf, transformers' native InternVLForConditionalGeneration): InternViT tower,
pixel-shuffle + MLP projector, Qwen2 decoder (teacher Qwen2ForCausalLM: InternVL3 is built on Qwen2.5).

The llava-hf layout (model.model.{language_model, vision_tower, multi_modal_projector}, model.lm_head), so the
base adapter's defaults place everything. An image becomes <img> <IMG_CONTEXT> x image_seq_length per tile
</img>; mm_token_type_ids mark all three, and <img>, </img>, <IMG_CONTEXT> are ids the Qwen2 teacher lacks.

Processor: InternVLProcessor insists on a video processor, which needs torchvision. `load_processor` builds the
real class without its video slot (`ImageOnlyInternVLProcessor`), so the expansion, the replacement offsets and
mm_token_type_ids come from transformers' own code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import InternVLProcessor

from lingudistill.models.families.base import FamilyAdapter


class ImageOnlyInternVLProcessor(InternVLProcessor):
    """InternVLProcessor without its video slot, saved and loaded under the real class's name.

    ProcessorMixin takes its sub-processors and saved settings from the `__init__` signature: this one lists
    image_seq_length and leaves out `video_processor`.
    """

    def __init__(self, image_processor=None, tokenizer=None, image_seq_length=256, chat_template=None, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(image_processor, tokenizer, None, image_seq_length, chat_template, **kwargs)


ImageOnlyInternVLProcessor.__name__ = ImageOnlyInternVLProcessor.__qualname__ = "InternVLProcessor"


class InternVLAdapter(FamilyAdapter):
    name = "internvl"
    model_types = ("internvl",)

    def load_processor(self, location: str | Path, **kwargs: Any) -> Any:
        return ImageOnlyInternVLProcessor.from_pretrained(location, trust_remote_code=False, **kwargs)
