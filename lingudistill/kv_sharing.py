"""Layer-wise KV-cache sharing between the student VLM's decoder and the frozen teacher LM.

K/V are intercepted in a registered attention function, where every decoder layer hands its keys and values
(after rotary embedding, before grouped-query repetition) to the attention kernel. That works in train mode,
where the student returns no cache, and under gradient checkpointing. The tap in force is a context
variable, so models not inside `tapping(...)` run plain SDPA.

Modes (METHOD.md):
- prompt: record the student's K/V of the first S = P - 1 tokens; the teacher continues from that cache over
  tokens S .. end with the student's positions, so its outputs line up with the student's response logits.
  Image tokens after the prompt (an image in a later user turn) are handed over as in visual mode: the
  student's K/V of every position are recorded, and the teacher's K/V at those tokens are replaced.
- visual / visual_system: the teacher runs over the whole sequence; at every layer its K/V at donated
  positions (image tokens; with visual_system also the text before the first image) are the student's.
- off: the teacher reads the text alone, image tokens removed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn
from transformers import AttentionInterface, DynamicCache, PreTrainedModel
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, eager_mask, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

# Two registrations: SDPA underneath where the model supports it, else the model's own eager attention (Gemma2's
# attention-logit softcapping, for one, exists only there). No "sdpa" in the eager name: transformers would
# otherwise check SDPA support for it.
TAPPED_SDPA = "lingudistill_sdpa"
TAPPED_EAGER = "lingudistill_eager"

KVHook = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
_active_hook: ContextVar[KVHook | None] = ContextVar("lingudistill_kv_hook", default=None)


def _hooked(module: nn.Module, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    hook = _active_hook.get()
    return hook(module, key, value) if hook is not None else (key, value)


def _tapped_sdpa(module: nn.Module, query, key, value, attention_mask, **kwargs):  # type: ignore[no-untyped-def]
    key, value = _hooked(module, key, value)
    return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, **kwargs)


def _tapped_eager(module: nn.Module, query, key, value, attention_mask, **kwargs):  # type: ignore[no-untyped-def]
    key, value = _hooked(module, key, value)
    eager = sys.modules[type(module).__module__].eager_attention_forward  # the model's own, softcapping included
    return eager(module, query, key, value, attention_mask, **kwargs)


def register_tapped_attention(model: PreTrainedModel) -> str:
    """Register the tapped attention fitting `model` and return its name."""
    if TAPPED_SDPA not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        AttentionInterface.register(TAPPED_SDPA, _tapped_sdpa)
        AttentionMaskInterface.register(TAPPED_SDPA, sdpa_mask)
        AttentionInterface.register(TAPPED_EAGER, _tapped_eager)
        AttentionMaskInterface.register(TAPPED_EAGER, eager_mask)
    sdpa_everywhere = all(m._supports_sdpa for m in model.modules() if isinstance(m, PreTrainedModel))
    return TAPPED_SDPA if sdpa_everywhere else TAPPED_EAGER


@contextmanager
def tapping(hook: KVHook) -> Iterator[None]:
    token = _active_hook.set(hook)
    try:
        yield
    finally:
        _active_hook.reset(token)


class KVRecorder:
    """Keeps a detached copy of the first `keep` positions of each tapped layer's K/V."""

    def __init__(self, attention_modules: Sequence[nn.Module], keep: int | None) -> None:
        self._layer_of = {id(m): i for i, m in enumerate(attention_modules)}
        self.keep = keep
        self.keys: list[torch.Tensor | None] = [None] * len(attention_modules)
        self.values: list[torch.Tensor | None] = [None] * len(attention_modules)

    def __call__(self, module: nn.Module, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self._layer_of.get(id(module))
        if layer is not None:
            self.keys[layer] = key[:, :, : self.keep].detach()
            self.values[layer] = value[:, :, : self.keep].detach()
        return key, value

    def select_rows(self, rows: torch.Tensor) -> KVRecorder:
        """The recording restricted to some batch rows (the distilled ones)."""
        subset = KVRecorder([], self.keep)
        subset._layer_of = self._layer_of
        subset.keys = [k[rows] if k is not None else None for k in self.keys]
        subset.values = [v[rows] if v is not None else None for v in self.values]
        return subset

    def as_cache(self, rows: torch.Tensor | None = None, length: int | None = None) -> DynamicCache:
        """The recorded K/V of the first `length` positions (default: all recorded) as the teacher's cache, layer
        l to layer l, optionally of a subset of batch rows."""
        if any(k is None for k in self.keys):
            missing = [i for i, k in enumerate(self.keys) if k is None]
            raise RuntimeError(f"the student's forward did not pass K/V of decoder layers {missing} to the tap")
        pairs = [(k[:, :, :length], v[:, :, :length]) for k, v in zip(self.keys, self.values, strict=True)]
        if rows is not None:
            pairs = [(k[rows], v[rows]) for k, v in pairs]
        return DynamicCache(ddp_cache_data=pairs)


class KVDonor:
    """Replaces the teacher's K/V at `donate` positions [batch, seq] with the student's recorded K/V."""

    def __init__(self, attention_modules: Sequence[nn.Module], recorder: KVRecorder, donate: torch.Tensor) -> None:
        self._layer_of = {id(m): i for i, m in enumerate(attention_modules)}
        self.recorder = recorder
        self.donate = donate[:, None, :, None]

    def __call__(self, module: nn.Module, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self._layer_of.get(id(module))
        if layer is None:
            return key, value
        donor_key, donor_value = self.recorder.keys[layer], self.recorder.values[layer]
        assert donor_key is not None and donor_value is not None
        length = key.shape[2]  # the keys span positions [0, length): a cache, if any, holds the first ones
        key = torch.where(self.donate, donor_key[:, :, :length].to(key.dtype), key)
        value = torch.where(self.donate, donor_value[:, :, :length].to(value.dtype), value)
        return key, value


def donated_positions(
    mm_token_type_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    mode: str,
    *,
    input_ids: torch.Tensor | None = None,
    teacher_vocab: int | None = None,
) -> torch.Tensor:
    """Positions whose K/V the teacher takes from the student, [batch, seq] bool (in `off` mode: drops).

    Image tokens, and every id at or past `teacher_vocab` (the student's own tokens: image markers, row/column
    tokens), which the teacher has no trained embedding for.
    """
    image = mm_token_type_ids > 0
    if input_ids is not None and teacher_vocab is not None:
        image = image | ((input_ids >= teacher_vocab) & attention_mask.bool())
    if mode == "visual_system":
        # Everything real before the first image token of each row is donated as well.
        seen_image = image.long().cumsum(-1) > 0
        has_image = image.any(-1, keepdim=True)
        image = image | (~seen_image & has_image & attention_mask.bool())
    return image


def text_only_layout(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, dropped: torch.Tensor, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For `off` mode: drop the `dropped` tokens (image tokens, the student's own ids), re-align rows at their
    ends. Returns ids, mask and index_map.

    index_map[b, t] is the teacher's position of the student's token t in row b (-1 for dropped tokens).
    Rows are right-aligned (left padding), which keeps the text's relative order and the response last.
    """
    keep = attention_mask.bool() & ~dropped
    kept_counts = keep.sum(-1)
    length = int(kept_counts.max())
    batch = input_ids.shape[0]
    ids = torch.full((batch, length), pad_token_id, dtype=input_ids.dtype, device=input_ids.device)
    mask = torch.zeros((batch, length), dtype=attention_mask.dtype, device=attention_mask.device)
    index_map = torch.full_like(input_ids, -1)
    for row in range(batch):
        positions = keep[row].nonzero().squeeze(-1)
        start = length - len(positions)
        ids[row, start:] = input_ids[row, positions]
        mask[row, start:] = 1
        index_map[row, positions] = torch.arange(start, length, device=input_ids.device)
    return ids, mask, index_map
