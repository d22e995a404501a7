"""A text-only 'language model' whose next-token logits are a fixed table: logits(t) = TABLE[token at t].

Its hidden state is the one-hot of the current token and lm_head is the table, so every log-probability the
scorer computes can be written down by hand.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from lingudistill.tiny.tokenizer import build_tokenizer

WORDS = ("user", "assistant", "one", "two", "three", "plus", "what", "is", "?", "red", "square", "the", ".")


def stub_tokenizer():  # type: ignore[no-untyped-def]
    return build_tokenizer(WORDS)


class _Base(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids: torch.Tensor, **_: object) -> SimpleNamespace:
        return SimpleNamespace(last_hidden_state=nn.functional.one_hot(input_ids, self.vocab).float())


class TableLM(nn.Module):
    """Next-token logits from a [V, V] table; `generate` appends `canned` tokens to every prompt."""

    def __init__(self, table: torch.Tensor, canned: list[int] | None = None) -> None:
        super().__init__()
        vocab = table.shape[0]
        self.base_model = _Base(vocab)
        self.lm_head = nn.Linear(vocab, vocab, bias=False)
        with torch.no_grad():
            self.lm_head.weight.copy_(table.T)  # logits = one_hot @ W.T = table[token]
        self.config = SimpleNamespace()
        self.canned = canned or []

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, **_: object) -> torch.Tensor:
        tail = torch.tensor(self.canned[:max_new_tokens], dtype=torch.long).expand(input_ids.shape[0], -1)
        return torch.cat([input_ids, tail], dim=1)
