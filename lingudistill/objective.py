"""The LinguDistill objective for one micro-batch: student forward, teacher continuation, chunked loss.

    L = ce_weight * CE(student, response tokens)
      + kd_weight * T^2 * D(teacher_T || student_T) over response tokens of distilled sources

Hidden states are taken at response positions only; lm_head and the loss run in chunks (losses.py), so full
[batch, seq, vocab] logits never exist for either model. The teacher runs under no_grad on the distilled rows
only: with selective KD a multimodal row never touches the teacher.

Vocabularies (METHOD.md): KD compares the first `shared_vocab` ids (the teacher's tokenizer), and a response token
outside them gets CE only (so does the token after it, which the teacher would predict from a pad embedding).
The teacher never embeds an id it does not have: positions holding image tokens or student-only ids are "donated"
(their K/V are the student's, in every mode that runs the teacher over them; `off` removes them), and the teacher
reads its pad id in place of a student-only id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel

from lingudistill.kv_sharing import (
    KVDonor,
    KVRecorder,
    donated_positions,
    register_tapped_attention,
    tapping,
    text_only_layout,
)
from lingudistill.losses import LossParts, chunked_distill_loss
from lingudistill.models.encoding import IGNORE
from lingudistill.models.families.base import FamilyAdapter
from lingudistill.spec import MethodSpec


@dataclass
class LossRows:
    """The (row, position) of every supervised token: hidden[b, t] predicts labels[b, t + 1]."""

    batch_index: torch.Tensor  # [N]
    position: torch.Tensor  # [N]
    target: torch.Tensor  # [N]
    distill: torch.Tensor  # [N] bool: the KD term applies

    @classmethod
    def of(cls, batch: dict[str, Any], shared_vocab: int | None = None) -> LossRows:
        """A row is not distilled when its target or its input token lies outside the shared vocabulary: the
        teacher has no such id to predict, or reads pad in place of one it cannot embed."""
        targets = batch["labels"][:, 1:]
        b, t = (targets != IGNORE).nonzero(as_tuple=True)
        target = targets[b, t]
        distill = batch["distill"].to(targets.device)[b]
        if shared_vocab is not None:
            distill = distill & (target < shared_vocab) & (batch["input_ids"][b, t] < shared_vocab)
        return cls(b, t, target, distill)


@dataclass
class MicroBatchLoss:
    parts: LossParts
    rows: LossRows
    sources: list[str]  # source name of each batch row

    def per_source(self) -> dict[str, tuple[float, float, int]]:
        """source -> (CE sum, KD sum, token count), for per-source metrics."""
        result: dict[str, tuple[float, float, int]] = {}
        rows = self.rows.batch_index.tolist()
        ce, kd = self.parts.per_token_ce.tolist(), self.parts.per_token_kd.tolist()
        for row, ce_i, kd_i in zip(rows, ce, kd, strict=True):
            name = self.sources[row]
            total_ce, total_kd, count = result.get(name, (0.0, 0.0, 0))
            result[name] = (total_ce + ce_i, total_kd + kd_i, count + 1)
        return result


class DistillationObjective:
    """Computes a micro-batch's share of the step loss for a student, its frozen teacher and the method."""

    def __init__(
        self,
        student: PreTrainedModel,
        teacher: PreTrainedModel | None,
        adapter: FamilyAdapter,
        method: MethodSpec,
        shared_vocab: int | None = None,
    ) -> None:
        """shared_vocab: the teacher's tokenizer length (compat.shared_vocab_size); by default the fewest rows of
        the two lm_heads and the teacher's embedding, which is right only when no head has padding rows."""
        self.student, self.teacher, self.adapter, self.method = student, teacher, adapter, method
        student.set_attn_implementation(register_tapped_attention(student))
        self.student_attention = adapter.attention_modules(student)
        self.shared_vocab: int | None = None
        if teacher is not None:
            teacher.set_attn_implementation(register_tapped_attention(teacher))
            self.teacher_attention = [layer.self_attn for layer in teacher.model.layers]
            self.shared_vocab = shared_vocab or _fewest_rows(adapter.lm_head(student), teacher)
        self.pad_token_id = int(adapter.text_config(student).pad_token_id or 0)
        # The teacher may lack the student's pad id (LLaVA-1.5's <pad> is 32001, past Vicuna's 32000 tokens).
        in_teacher = self.shared_vocab is None or self.pad_token_id < self.shared_vocab
        self.teacher_pad_id = self.pad_token_id if in_teacher else 0

    def __call__(self, batch: dict[str, Any], ce_normalizer: float, kd_normalizer: float) -> MicroBatchLoss:
        rows = LossRows.of(batch, self.shared_vocab)
        distill_rows = self._distill_rows(batch, rows)
        positions = self.adapter.position_ids(self.student, batch)
        recorder = self._recorder(batch, distill_rows) if distill_rows is not None else None
        hidden = self._student_hidden(batch, positions, recorder)
        teacher_hidden = None
        if distill_rows is not None and recorder is not None:
            teacher_hidden = self._teacher_hidden(batch, positions, recorder, distill_rows, rows)
        elif distill_rows is not None:
            teacher_hidden = self._teacher_hidden_text_only(batch, distill_rows, rows)
        parts = chunked_distill_loss(
            hidden[rows.batch_index, rows.position],
            self.adapter.lm_head(self.student).weight,
            rows.target,
            rows.distill if teacher_hidden is not None else torch.zeros_like(rows.distill),
            teacher_hidden,
            self.teacher.get_output_embeddings().weight if teacher_hidden is not None else None,
            divergence=self.method.divergence,
            beta=self.method.jsd_beta,
            temperature=self.method.temperature,
            ce_weight=self.method.ce_weight,
            kd_weight=self.method.kd_weight,
            ce_normalizer=ce_normalizer,
            kd_normalizer=kd_normalizer,
            chunk_size=self.method.loss_chunk_size,
            student_softcap=getattr(self.adapter.text_config(self.student), "final_logit_softcapping", None),
            teacher_softcap=getattr(self.teacher.config, "final_logit_softcapping", None) if self.teacher else None,
            shared_vocab=self.shared_vocab if teacher_hidden is not None else None,
        )
        return MicroBatchLoss(parts, rows, list(batch["sources"]))

    def distilled_tokens(self, batch: dict[str, Any]) -> int:
        """Response tokens of the batch that get the KD term: the kd_normalizer counts these, which leaves out
        targets (and inputs) outside the teacher's vocabulary."""
        if self.teacher is None:
            return 0
        return int(LossRows.of(batch, self.shared_vocab).distill.sum())

    # --- student ------------------------------------------------------------------------------------------------
    def _student_hidden(
        self, batch: dict[str, Any], positions: torch.Tensor, recorder: KVRecorder | None
    ) -> torch.Tensor:
        inputs = dict(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=positions,
            use_cache=False,
            **self.adapter.forward_kwargs(batch),
        )
        base = self.adapter.base_forward(self.student)
        if recorder is None:
            return base(**inputs).last_hidden_state
        with tapping(recorder):
            return base(**inputs).last_hidden_state

    def _distill_rows(self, batch: dict[str, Any], rows: LossRows) -> torch.Tensor | None:
        """Batch rows that need the teacher, or None when no supervised token is distilled."""
        if self.teacher is None or not bool(rows.distill.any()):
            return None
        return batch["distill"].nonzero().squeeze(-1).to(batch["input_ids"].device)

    def _recorder(self, batch: dict[str, Any], distill_rows: torch.Tensor) -> KVRecorder | None:
        """Records the student's K/V: in prompt mode the first S positions, or all of them when the teacher's
        continuation holds donated positions (images in a later user turn)."""
        mode = self.method.kv_sharing
        if mode == "off":
            return None
        keep = None
        if mode == "prompt":
            start = batch["prompt_length"] - 1
            later = self._donated(batch, distill_rows, "prompt")[:, start:]
            keep = None if bool(later.any()) else start
        return KVRecorder(self.student_attention, keep)

    def _donated(self, batch: dict[str, Any], rows: torch.Tensor, mode: str) -> torch.Tensor:
        """[len(rows), seq] bool: positions the teacher takes from the student (or, off mode, never sees)."""
        return donated_positions(
            batch["mm_token_type_ids"][rows],
            batch["attention_mask"][rows],
            mode,
            input_ids=batch["input_ids"][rows],
            teacher_vocab=self.shared_vocab,
        )

    def _teacher_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """The teacher never embeds an id it lacks: it reads pad there (those positions are donated or padding)."""
        if self.shared_vocab is None:
            return ids
        return ids.masked_fill(ids >= self.shared_vocab, self.teacher_pad_id)

    # --- teacher ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _teacher_hidden(
        self,
        batch: dict[str, Any],
        positions: torch.Tensor,
        recorder: KVRecorder,
        distill_rows: torch.Tensor,
        rows: LossRows,
    ) -> torch.Tensor:
        """Teacher hidden states at the supervised rows, with the student's K/V as its context.

        prompt: the cache holds the student's K/V of tokens [0, S); the teacher runs over S .. end, and its K/V
        at donated positions there (images in a later turn) are the student's too. visual modes: the teacher runs
        over the whole sequence with the student's K/V at the donated positions.
        """
        assert self.teacher is not None
        d = distill_rows
        mask = batch["attention_mask"][d]
        donated = self._donated(batch, d, self.method.kv_sharing)
        ids = self._teacher_ids(batch["input_ids"][d])
        teacher_positions = self.adapter.teacher_position_ids(positions)[d]
        end = ids.shape[1] - 1  # the last token predicts nothing
        start = batch["prompt_length"] - 1 if self.method.kv_sharing == "prompt" else 0
        inputs = dict(
            input_ids=ids[:, start:end], attention_mask=mask[:, :end], position_ids=teacher_positions[:, start:end]
        )
        if start:
            inputs |= dict(past_key_values=recorder.as_cache(d, length=start), use_cache=True)
        if recorder.keep is not None:  # prompt mode, nothing donated after the prompt: the cache is all it needs
            hidden = self.teacher.model(**inputs).last_hidden_state
        else:
            # The tap sees each layer's keys over [0, end), the cached ones included, so the mask spans them.
            donor = KVDonor(self.teacher_attention, recorder.select_rows(d), donated[:, :end])
            with tapping(donor):
                hidden = self.teacher.model(**inputs).last_hidden_state
        return _scatter_rows(hidden, rows, distill_rows, lambda b, t: t - start)

    @torch.no_grad()
    def _teacher_hidden_text_only(self, batch: dict[str, Any], distill_rows: torch.Tensor, rows: LossRows):
        """`off` mode: the teacher reads the text with the image tokens and student-only ids removed (ordinary KD)."""
        assert self.teacher is not None
        d = distill_rows
        dropped = self._donated(batch, d, "off")
        ids, mask, index_map = text_only_layout(
            batch["input_ids"][d], batch["attention_mask"][d], dropped, self.teacher_pad_id
        )
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = self.teacher.model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
        return _scatter_rows(hidden, rows, distill_rows, lambda b, t: index_map[b, t])


def _fewest_rows(student_head: torch.nn.Module, teacher: PreTrainedModel) -> int:
    heads = (student_head, teacher.get_output_embeddings(), teacher.get_input_embeddings())
    return min(int(module.weight.shape[0]) for module in heads)


def _scatter_rows(hidden: torch.Tensor, rows: LossRows, distill_rows: torch.Tensor, to_teacher_pos) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Teacher hidden state for every supervised row (zeros where the row is not distilled), [N, H]."""
    out = hidden.new_zeros((len(rows.target), hidden.shape[-1]))
    slot_of_row = torch.full((int(distill_rows.max()) + 1,), -1, dtype=torch.long, device=hidden.device)
    slot_of_row[distill_rows] = torch.arange(len(distill_rows), device=hidden.device)
    selected = rows.distill.nonzero().squeeze(-1)
    slots = slot_of_row[rows.batch_index[selected]]
    teacher_pos = to_teacher_pos(slots, rows.position[selected])
    out[selected] = hidden[slots, teacher_pos]
    return out
