"""Idefics3 and SmolVLM (HuggingFaceM4/Idefics3-*, HuggingFaceTB/SmolVLM*): SigLIP-like tower, pixel-shuffle
connector, Llama decoder (SmolLM2 for SmolVLM).

Differences from LLaVA, all handled here:
- the parts live at model.model.{text_model, vision_model, connector};
- pixel_values are [batch, n_images, 3, H, W] with a pixel_attention_mask [batch, n_images, H, W]. The
  processor splits an image into tiles (rows x cols, plus the global view), so rows hold different numbers of
  images; collation pads n_images, H and W with zeros, as the processor does inside one call. All-zero images
  are what Idefics3 drops as padding, so a text-only row in a batch with image rows gets only padding images;
- SmolVLM's processor needs a video processor (torchvision) and num2words. Its image layout, tokens and image
  processor are those of Idefics3, so a SmolVLM student is read with an Idefics3Processor built from the
  folder's image processor, tokenizer, chat template and image_seq_len.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoTokenizer, Idefics3ImageProcessorPil, Idefics3Processor, PreTrainedModel
from transformers.utils import cached_file

from lingudistill.models.families.base import FamilyAdapter


class Idefics3Adapter(FamilyAdapter):
    name = "idefics3"
    model_types = ("idefics3",)
    image_input_keys = ("pixel_values", "pixel_attention_mask")

    def decoder(self, model: PreTrainedModel) -> nn.Module:
        return model.model.text_model

    def projector(self, model: PreTrainedModel) -> nn.Module:
        return model.model.connector

    def vision(self, model: PreTrainedModel) -> nn.Module:
        return model.model.vision_model

    def collate_images(self, examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Pad every row to the batch's most images and largest tile, with zero pixels and a zero pixel mask."""
        rows = [ex for ex in examples if "pixel_values" in ex]
        if not rows:
            return {}
        first = rows[0]["pixel_values"]
        n_images = max(ex["pixel_values"].shape[1] for ex in rows)
        height = max(ex["pixel_values"].shape[-2] for ex in rows)
        width = max(ex["pixel_values"].shape[-1] for ex in rows)
        pixels = first.new_zeros((len(examples), n_images, first.shape[2], height, width))
        mask_dtype = rows[0]["pixel_attention_mask"].dtype if "pixel_attention_mask" in rows[0] else torch.long
        masks = torch.zeros((len(examples), n_images, height, width), dtype=mask_dtype)
        for row, ex in enumerate(examples):
            if "pixel_values" not in ex:
                continue
            values = ex["pixel_values"][0]
            k, _, h, w = values.shape
            pixels[row, :k, :, :h, :w] = values
            masks[row, :k, :h, :w] = ex["pixel_attention_mask"][0] if "pixel_attention_mask" in ex else 1
        return {"pixel_values": pixels, "pixel_attention_mask": masks}


class SmolVLMAdapter(Idefics3Adapter):
    name = "smolvlm"
    model_types = ("smolvlm",)

    def load_processor(self, location: str | Path, **kwargs: Any) -> Any:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=False, **kwargs)
        image_processor = Idefics3ImageProcessorPil.from_pretrained(location, **kwargs)
        settings: dict[str, Any] = {}
        config_file = cached_file(
            location, "processor_config.json", _raise_exceptions_for_missing_entries=False, **kwargs
        )
        if config_file:
            settings = json.loads(Path(config_file).read_text())
        return Idefics3Processor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            image_seq_len=settings.get("image_seq_len", 169),
            chat_template=tokenizer.chat_template,
        )
