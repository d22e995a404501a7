"""LLaVA-OneVision (llava-hf/llava-onevision-*): SigLIP tower, anyres tiling, MLP projector, Qwen2 decoder.

Differences from LLaVA, handled here:
- pixel_values are [n_images, n_tiles, 3, H, W], the tile count depending on each image's size; the model
  reads the real tiles of each image back from image_sizes, so collation pads the tile dimension with zeros
  and concatenates images; image_sizes and batch_num_images (images per row with images; a row with several
  images takes no anyres tiles) are concatenated too;
- the processor class insists on a video processor, which needs torchvision: it is loaded without its video
  slot (`ImageOnlyLlavaOnevisionProcessor`), so the image-token expansion and its offsets are transformers' own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import LlavaOnevisionProcessor

from lingudistill.models.families.base import FamilyAdapter


class ImageOnlyLlavaOnevisionProcessor(LlavaOnevisionProcessor):
    """LlavaOnevisionProcessor without its video slot; saved and loaded under the real class's name.

    ProcessorMixin takes its sub-processors and its saved settings from the `__init__` signature, so this one
    lists the image settings (num_image_tokens ...) and leaves out `video_processor`.
    """

    def __init__(  # type: ignore[no-untyped-def]
        self,
        image_processor=None,
        tokenizer=None,
        num_image_tokens=None,
        vision_feature_select_strategy=None,
        chat_template=None,
        image_token="<image>",
        video_token="<video>",
        vision_aspect_ratio="anyres_max_9",
        **kwargs,
    ):
        super().__init__(
            image_processor,
            tokenizer,
            None,
            num_image_tokens=num_image_tokens,
            vision_feature_select_strategy=vision_feature_select_strategy,
            chat_template=chat_template,
            image_token=image_token,
            video_token=video_token,
            vision_aspect_ratio=vision_aspect_ratio,
            **kwargs,
        )


ImageOnlyLlavaOnevisionProcessor.__name__ = ImageOnlyLlavaOnevisionProcessor.__qualname__ = "LlavaOnevisionProcessor"


class LlavaOnevisionAdapter(FamilyAdapter):
    name = "llava_onevision"
    model_types = ("llava_onevision",)
    image_input_keys = ("pixel_values", "image_sizes", "batch_num_images")

    def load_processor(self, location: str | Path, **kwargs: Any) -> Any:
        return ImageOnlyLlavaOnevisionProcessor.from_pretrained(location, trust_remote_code=False, **kwargs)

    def collate_images(self, examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batched = collate_anyres(examples)
        rows = [ex for ex in examples if "pixel_values" in ex]
        if batched and all("batch_num_images" in ex for ex in rows):
            batched["batch_num_images"] = torch.cat([torch.as_tensor(ex["batch_num_images"]) for ex in rows])
        return batched


def collate_anyres(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Anyres images [n_images, n_tiles, 3, H, W] of several examples: the tile dimension padded with zeros (the
    model reads each image's real tiles back from image_sizes), images and image_sizes concatenated."""
    rows = [ex for ex in examples if "pixel_values" in ex]
    if not rows:
        return {}
    tiles = max(ex["pixel_values"].shape[1] for ex in rows)
    pixels = []
    for ex in rows:
        values = ex["pixel_values"]
        pad = values.new_zeros((values.shape[0], tiles - values.shape[1], *values.shape[2:]))
        pixels.append(torch.cat([values, pad], dim=1))
    return {"pixel_values": torch.cat(pixels), "image_sizes": torch.cat([ex["image_sizes"] for ex in rows])}
