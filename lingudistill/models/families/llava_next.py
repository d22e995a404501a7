"""LLaVA-NeXT (llava-hf/llava-v1.6-*): CLIP/SigLIP tower, anyres tiling with image_newline, MLP projector, a
Llama/Vicuna, Mistral or other decoder.

The llava-hf layout, so the base adapter places everything; its processor needs no video processor. Like
LLaVA-OneVision, pixel_values are [n_images, n_tiles, 3, H, W] with a tile count per image, collated by
`collate_anyres`; every image (several per row too) takes its anyres tiles.
"""

from __future__ import annotations

import torch

from lingudistill.models.families.base import FamilyAdapter
from lingudistill.models.families.llava_onevision import collate_anyres


class LlavaNextAdapter(FamilyAdapter):
    name = "llava_next"
    model_types = ("llava_next",)
    image_input_keys = ("pixel_values", "image_sizes")

    def collate_images(self, examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return collate_anyres(examples)
