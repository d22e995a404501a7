"""What differs between VLM families, in one small adapter per family.

An adapter answers a handful of questions about a loaded student: where its decoder, lm_head, projector and
vision encoder live; which position ids its decoder uses; which extra tensors its forward takes; how its
processor is loaded and its image tensors batched. Everything else (encoding, KV sharing, losses, the
training loop) is family-agnostic and asks the adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import AutoProcessor, PreTrainedModel


class FamilyAdapter:
    """Defaults fit LLaVA-style models: model.model.{language_model, vision_tower, multi_modal_projector}."""

    name: ClassVar[str] = "base"
    model_types: ClassVar[tuple[str, ...]] = ()
    # Keys of the processor's output that the student's forward consumes besides input ids and the mask.
    image_input_keys: ClassVar[tuple[str, ...]] = ("pixel_values",)

    def __init__(self, config: Any = None) -> None:
        """config: the student's model config, for the questions that depend on it (None: the defaults)."""
        self.config = config

    # --- where things live ---------------------------------------------------------------------------------
    def decoder(self, model: PreTrainedModel) -> nn.Module:
        return model.model.language_model

    def lm_head(self, model: PreTrainedModel) -> nn.Linear:
        return model.lm_head

    def projector(self, model: PreTrainedModel) -> nn.Module:
        return model.model.multi_modal_projector

    def vision(self, model: PreTrainedModel) -> nn.Module:
        return model.model.vision_tower

    def text_config(self, model: PreTrainedModel) -> Any:
        return model.config.get_text_config(decoder=True)

    def attention_modules(self, model: PreTrainedModel) -> list[nn.Module]:
        """The decoder's self-attention modules, layer 0 first: their K/V are what the teacher inherits."""
        return [layer.self_attn for layer in self.decoder(model).layers]

    def base_forward(self, model: PreTrainedModel) -> nn.Module:
        """The module whose forward returns last_hidden_state (after the final norm), before lm_head."""
        return model.model

    # --- inputs ---------------------------------------------------------------------------------------------
    def load_processor(self, location: str | Path, **kwargs: Any) -> Any:
        return AutoProcessor.from_pretrained(location, trust_remote_code=False, **kwargs)

    def position_ids(self, model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Positions the student's decoder uses, [batch, seq]; left padding does not advance them."""
        mask = batch["attention_mask"]
        return (mask.long().cumsum(-1) - 1).clamp(min=0)

    def teacher_position_ids(self, student_positions: torch.Tensor) -> torch.Tensor:
        """The 1-D positions a text-only teacher must use to match the student, [batch, seq]."""
        return student_positions

    def forward_kwargs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Extra tensors the student's forward takes (pixel values, grids, token types ...)."""
        return {key: batch[key] for key in self.image_input_keys if key in batch}

    def collate_images(self, examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Batch the per-example image tensors. Default: concatenate along the image dimension."""
        batched: dict[str, torch.Tensor] = {}
        for key in self.image_input_keys:
            parts = [ex[key] for ex in examples if key in ex]
            if parts:
                batched[key] = torch.cat(parts, dim=0)
        return batched

    def processor_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for the processor call."""
        return {}

    def render_record(self, encoder: Any, record: Any) -> tuple[str, list[tuple[int, int]]]:
        """The text of a record and the character spans of its supervised (assistant) content in that text.

        Default: the processor's chat template, via `encoder.render_with_assistant_spans`. Families without a
        chat template (PaliGemma: prefix and suffix) build the text themselves.
        """
        return encoder.render_with_assistant_spans(record)

    def process(self, processor: Any, text: str, images: list, **options: Any) -> Any:
        """Run the processor on one rendered text and its images.

        The result holds input_ids and offset_mapping ([1, L]), text_replacement_offsets when there are images,
        optionally mm_token_type_ids (1 on image tokens), and the tensors named in `image_input_keys`.
        """
        return processor(
            text=[text],
            images=[images] if images else None,
            return_text_replacement_offsets=True,
            return_mm_token_type_ids=True,
            **options,
            **self.processor_kwargs(),
        )

    def distilled_prompt_limit(self) -> tuple[int, str] | None:
        """The longest prompt (image tokens included) whose hand-over to the teacher is exact, and why; None when
        any length is. Distilled records with a longer prompt are refused with the record's source and line."""
        return None

    def image_token_ids(self, model_config: Any) -> list[int]:
        """Token ids that stand for image content (removed from the teacher's input in `off` mode)."""
        ids = [getattr(model_config, "image_token_id", None), getattr(model_config, "image_token_index", None)]
        return sorted({int(i) for i in ids if i is not None})
