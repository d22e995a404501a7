"""The LinguDistill objective: hard-label cross-entropy plus a KD divergence, computed chunk by chunk.

    L = ce_weight * sum_i CE_i / ce_normalizer  +  kd_weight * T^2 * sum_{i in kd_mask} D_i / kd_normalizer

CE uses the student's logits at temperature 1 against the hard labels; D compares teacher and student at
temperature T. Both normalisers count the response tokens of the whole optimiser step (all micro-batches and
ranks), so each call returns its share of one step-wide mean. A zero normaliser means the term is absent.

References: LinguDistill (arXiv 2604.00829); temperature and the T^2 factor: Hinton et al. 2015, "Distilling
the Knowledge in a Neural Network"; generalised JSD: GKD (Agarwal et al., arXiv 2306.13649) with the beta
convention of TRL's `generalized_jsd_loss` and Liger's fused-linear JSD; the chunked loss with its gradient
computed during the forward pass: Liger's fused-linear losses.

Shapes: N rows, already shifted so that row i predicts labels[i]; H and Ht the student's and teacher's hidden
sizes; V and Vt the rows of the student's and teacher's heads.

Vocabularies (METHOD.md): the student's tokenizer may extend the teacher's, so the two heads share only the first
`shared_vocab` ids (the teacher's tokenizer length; its head may have more, untrained, padding rows). D compares
both distributions renormalised over those ids, softmax over logits[:, :shared_vocab], so equal models give D = 0
exactly; CE keeps the student's whole vocabulary. A KD row must have a target inside the shared ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from lingudistill.spec import Divergence

IGNORE_INDEX = -100


@dataclass(frozen=True)
class LossParts:
    """One call's loss. Only `total` carries a gradient; the rest is detached fp32, for reporting.

    total: scalar, this call's share of the step loss.
    ce_sum, kd_sum: scalars, un-normalised sums of per_token_ce and per_token_kd.
    per_token_ce, per_token_kd: [N], zero on rows whose label is -100 / whose kd_mask is False.
    """

    total: Tensor
    ce_sum: Tensor
    kd_sum: Tensor
    per_token_ce: Tensor
    per_token_kd: Tensor


@dataclass(frozen=True)
class _Objective:
    divergence: Divergence
    beta: float
    temperature: float
    ce_scale: float  # ce_weight / ce_normalizer, or 0 when the term is absent
    kd_scale: float  # kd_weight * T^2 / kd_normalizer, or 0 when the term is absent
    student_softcap: float | None
    teacher_softcap: float | None
    shared_vocab: int  # KD compares logits[:, :shared_vocab] of both models


def token_divergence(
    student_logits: Tensor, teacher_logits: Tensor, divergence: Divergence, beta: float, temperature: float
) -> Tensor:
    """Per-token divergence D(teacher_T, student_T): [N, V] logits -> [N] fp32.

    p_t = softmax(teacher / T), p_s = softmax(student / T), computed in fp32.
    forward_kl: KL(p_t || p_s) (Hinton 2015). reverse_kl: KL(p_s || p_t). beta is ignored by both.
    jsd: beta * KL(p_t || m) + (1 - beta) * KL(p_s || m) with m = beta * p_t + (1 - beta) * p_s (GKD eq. 1, as
    in TRL and Liger). Like them, beta = 0 is defined as forward KL and beta = 1 as reverse KL; note that the
    mixture formula itself tends to 0, not to a KL, as beta approaches 0 or 1.
    """
    _check_divergence(divergence, beta, temperature)
    student_logp = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_logp = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if divergence == "forward_kl" or (divergence == "jsd" and beta == 0):
        return _kl(teacher_logp, student_logp)
    if divergence == "reverse_kl" or (divergence == "jsd" and beta == 1):
        return _kl(student_logp, teacher_logp)
    mixture_logp = _log_mixture(student_logp, teacher_logp, beta)
    return beta * _kl(teacher_logp, mixture_logp) + (1 - beta) * _kl(student_logp, mixture_logp)


def chunked_distill_loss(
    student_hidden: Tensor,
    student_head: Tensor,
    labels: Tensor,
    kd_mask: Tensor,
    teacher_hidden: Tensor | None,
    teacher_head: Tensor | None,
    *,
    divergence: Divergence,
    beta: float,
    temperature: float,
    ce_weight: float,
    kd_weight: float,
    ce_normalizer: float,
    kd_normalizer: float,
    chunk_size: int,
    student_softcap: float | None = None,
    teacher_softcap: float | None = None,
    shared_vocab: int | None = None,
) -> LossParts:
    """The objective of this module, never holding more than chunk_size rows of [N, V] logits.

    student_hidden [N, H] and student_head [V, H] (may be a tied embedding) receive gradients; teacher_hidden
    [N, Ht] and teacher_head [Vt, Ht] never do, and may be None only when kd_mask [N] is all False. labels [N]
    are token ids, -100 where a row has no CE. softcap c maps logits to c * tanh(logits / c) before the
    temperature (Gemma's final_logit_softcapping). shared_vocab (default: V, which Vt must then equal) is how
    many leading ids KD compares; rows of kd_mask need labels below it. Accumulates in fp32 for fp32 and bf16.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    shared_vocab = _check_inputs(
        student_hidden, student_head, labels, kd_mask, teacher_hidden, teacher_head, shared_vocab
    )
    objective = _build_objective(
        divergence,
        beta,
        temperature,
        ce_weight,
        kd_weight,
        ce_normalizer,
        kd_normalizer,
        student_softcap,
        teacher_softcap,
        shared_vocab,
    )
    total, per_token_ce, per_token_kd = _ChunkedDistill.apply(
        student_hidden, student_head, teacher_hidden, teacher_head, labels, kd_mask, objective, chunk_size
    )
    return _loss_parts(total, per_token_ce, per_token_kd)


def naive_distill_loss(
    student_hidden: Tensor,
    student_head: Tensor,
    labels: Tensor,
    kd_mask: Tensor,
    teacher_hidden: Tensor | None,
    teacher_head: Tensor | None,
    *,
    divergence: Divergence,
    beta: float,
    temperature: float,
    ce_weight: float,
    kd_weight: float,
    ce_normalizer: float,
    kd_normalizer: float,
    chunk_size: int,
    student_softcap: float | None = None,
    teacher_softcap: float | None = None,
    shared_vocab: int | None = None,
) -> LossParts:
    """Reference for `chunked_distill_loss`: full [N, V] logits and plain autograd. chunk_size is unused."""
    shared_vocab = _check_inputs(
        student_hidden, student_head, labels, kd_mask, teacher_hidden, teacher_head, shared_vocab
    )
    objective = _build_objective(
        divergence,
        beta,
        temperature,
        ce_weight,
        kd_weight,
        ce_normalizer,
        kd_normalizer,
        student_softcap,
        teacher_softcap,
        shared_vocab,
    )
    teacher_logits = _teacher_logits(teacher_hidden, teacher_head, kd_mask, shared_vocab)
    ce, kd = _token_losses(_student_logits(student_hidden, student_head), teacher_logits, labels, kd_mask, objective)
    return _loss_parts(_weighted_total(ce, kd, objective), ce, kd)


class _ChunkedDistill(torch.autograd.Function):
    """Forward computes the loss and its gradients chunk by chunk; backward only rescales them."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        student_hidden: Tensor,
        student_head: Tensor,
        teacher_hidden: Tensor | None,
        teacher_head: Tensor | None,
        labels: Tensor,
        kd_mask: Tensor,
        objective: _Objective,
        chunk_size: int,
    ) -> tuple[Tensor, Tensor, Tensor]:
        grad_hidden, grad_head, per_token_ce, per_token_kd = _forward_in_chunks(
            student_hidden, student_head, teacher_hidden, teacher_head, labels, kd_mask, objective, chunk_size
        )
        ctx.save_for_backward(grad_hidden, grad_head)
        ctx.mark_non_differentiable(per_token_ce, per_token_kd)
        return _weighted_total(per_token_ce, per_token_kd, objective), per_token_ce, per_token_kd

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_total: Tensor, _grad_ce: Tensor, _grad_kd: Tensor
    ) -> tuple[Tensor | None, ...]:
        grad_hidden, grad_head = ctx.saved_tensors
        return _rescale(grad_hidden, grad_total), _rescale(grad_head, grad_total), None, None, None, None, None, None


def _forward_in_chunks(
    student_hidden: Tensor,
    student_head: Tensor,
    teacher_hidden: Tensor | None,
    teacher_head: Tensor | None,
    labels: Tensor,
    kd_mask: Tensor,
    objective: _Objective,
    chunk_size: int,
) -> tuple[Tensor | None, Tensor | None, Tensor, Tensor]:
    """Gradients w.r.t. student_hidden and student_head (None where not required) and per-row CE and KD."""
    n = student_hidden.shape[0]
    grad_hidden = torch.zeros_like(student_hidden) if student_hidden.requires_grad else None
    grad_head = torch.zeros_like(student_head, dtype=torch.float32) if student_head.requires_grad else None
    per_token_ce = torch.zeros(n, dtype=torch.float32, device=student_hidden.device)
    per_token_kd = torch.zeros_like(per_token_ce)
    for start in range(0, n, chunk_size):
        rows = slice(start, start + chunk_size)
        hidden = student_hidden[rows]
        teacher = None if teacher_hidden is None else teacher_hidden[rows]
        ce, kd, logits_grad = _chunk_losses_and_logits_grad(
            hidden, student_head, teacher, teacher_head, labels[rows], kd_mask[rows], objective
        )
        per_token_ce[rows], per_token_kd[rows] = ce, kd
        # Back through the lm_head by hand, in the head's dtype; the head's gradient accumulates in fp32.
        logits_grad = logits_grad.to(student_head.dtype)
        if grad_hidden is not None:
            grad_hidden[rows] = logits_grad @ student_head
        if grad_head is not None:
            grad_head += logits_grad.T @ hidden
    if grad_head is not None:
        grad_head = grad_head.to(student_head.dtype)
    return grad_hidden, grad_head, per_token_ce, per_token_kd


def _chunk_losses_and_logits_grad(
    hidden: Tensor,
    head: Tensor,
    teacher_hidden: Tensor | None,
    teacher_head: Tensor | None,
    labels: Tensor,
    kd_mask: Tensor,
    objective: _Objective,
) -> tuple[Tensor, Tensor, Tensor]:
    """One chunk of n rows: per-row CE and KD [n], and the gradient of its share of the total w.r.t. its logits."""
    teacher_logits = _teacher_logits(teacher_hidden, teacher_head, kd_mask, objective.shared_vocab)
    logits = _student_logits(hidden, head).detach().requires_grad_()
    with torch.enable_grad():
        ce, kd = _token_losses(logits, teacher_logits, labels, kd_mask, objective)
        (logits_grad,) = torch.autograd.grad(_weighted_total(ce, kd, objective), logits)
    return ce.detach(), kd.detach(), logits_grad


def _token_losses(
    student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor, kd_mask: Tensor, objective: _Objective
) -> tuple[Tensor, Tensor]:
    """Per-row CE and KD [n] from fp32 student logits [n, V] and teacher logits [k, shared] of the k kd_mask rows."""
    student_logits = _softcap(student_logits, objective.student_softcap)
    ce = F.cross_entropy(student_logits, labels, ignore_index=IGNORE_INDEX, reduction="none")
    kd = torch.zeros_like(ce)
    if teacher_logits is not None:
        teacher_logits = _softcap(teacher_logits, objective.teacher_softcap)
        divergence = token_divergence(
            student_logits[kd_mask, : objective.shared_vocab],
            teacher_logits,
            objective.divergence,
            objective.beta,
            objective.temperature,
        )
        kd = kd.masked_scatter(kd_mask, divergence)
    return ce, kd


def _student_logits(hidden: Tensor, head: Tensor) -> Tensor:
    return (hidden @ head.T).float()


@torch.no_grad()
def _teacher_logits(
    teacher_hidden: Tensor | None, teacher_head: Tensor | None, kd_mask: Tensor, shared_vocab: int
) -> Tensor | None:
    """fp32 teacher logits [k, shared_vocab] of the k rows in kd_mask, no gradient; None when there is no teacher."""
    if teacher_hidden is None or teacher_head is None:
        return None
    return (teacher_hidden[kd_mask] @ teacher_head[:shared_vocab].T).float()


def _softcap(logits: Tensor, cap: float | None) -> Tensor:
    return logits if cap is None else cap * torch.tanh(logits / cap)


def _kl(logp: Tensor, logq: Tensor) -> Tensor:
    """KL(p || q) per row from log-probabilities: [N, V] -> [N]."""
    return F.kl_div(logq, logp, reduction="none", log_target=True).sum(-1)


def _log_mixture(student_logp: Tensor, teacher_logp: Tensor, beta: float) -> Tensor:
    """log(beta * p_t + (1 - beta) * p_s), elementwise.

    Written as a + log1p(w_b * expm1(b - a)) around the larger term a, so that it returns exactly log p when
    p_t == p_s: identical models then give a JSD of exactly 0, where logaddexp leaves rounding noise.
    """
    teacher_larger = teacher_logp >= student_logp
    larger = torch.where(teacher_larger, teacher_logp, student_logp)
    smaller = torch.where(teacher_larger, student_logp, teacher_logp)
    smaller_weight = torch.where(teacher_larger, 1 - beta, beta)
    return larger + torch.log1p(smaller_weight * torch.expm1(smaller - larger))


def _weighted_total(per_token_ce: Tensor, per_token_kd: Tensor, objective: _Objective) -> Tensor:
    return objective.ce_scale * per_token_ce.sum() + objective.kd_scale * per_token_kd.sum()


def _rescale(grad: Tensor | None, grad_output: Tensor) -> Tensor | None:
    return None if grad is None else (grad * grad_output).to(grad.dtype)


def _loss_parts(total: Tensor, per_token_ce: Tensor, per_token_kd: Tensor) -> LossParts:
    per_token_ce, per_token_kd = per_token_ce.detach(), per_token_kd.detach()
    return LossParts(total, per_token_ce.sum(), per_token_kd.sum(), per_token_ce, per_token_kd)


def _build_objective(
    divergence: Divergence,
    beta: float,
    temperature: float,
    ce_weight: float,
    kd_weight: float,
    ce_normalizer: float,
    kd_normalizer: float,
    student_softcap: float | None,
    teacher_softcap: float | None,
    shared_vocab: int,
) -> _Objective:
    _check_divergence(divergence, beta, temperature)
    for name, cap in (("student_softcap", student_softcap), ("teacher_softcap", teacher_softcap)):
        if cap is not None and cap <= 0:
            raise ValueError(f"{name} must be > 0 or None, got {cap}")
    ce_scale = _term_scale("ce", ce_weight, ce_normalizer)
    kd_scale = _term_scale("kd", kd_weight * temperature**2, kd_normalizer)
    return _Objective(divergence, beta, temperature, ce_scale, kd_scale, student_softcap, teacher_softcap, shared_vocab)


def _term_scale(term: str, weight: float, normalizer: float) -> float:
    """weight / normalizer; a zero normaliser means the step has no such tokens, so the term is absent."""
    if normalizer < 0:
        raise ValueError(f"{term}_normalizer must be >= 0, got {normalizer}")
    return weight / normalizer if normalizer > 0 else 0.0


def _check_divergence(divergence: str, beta: float, temperature: float) -> None:
    if divergence not in get_args(Divergence):
        raise ValueError(f"divergence must be one of {get_args(Divergence)}, got {divergence!r}")
    if not 0 <= beta <= 1:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _check_inputs(
    student_hidden: Tensor,
    student_head: Tensor,
    labels: Tensor,
    kd_mask: Tensor,
    teacher_hidden: Tensor | None,
    teacher_head: Tensor | None,
    shared_vocab: int | None,
) -> int:
    """Raises on inconsistent shapes; returns the number of shared ids KD compares."""
    n = student_hidden.shape[0]
    if student_hidden.ndim != 2 or student_head.ndim != 2 or student_head.shape[1] != student_hidden.shape[1]:
        raise ValueError(
            f"need student_hidden [N, H] and student_head [V, H], got {student_hidden.shape}, {student_head.shape}"
        )
    if labels.shape != (n,) or kd_mask.shape != (n,) or kd_mask.dtype != torch.bool:
        raise ValueError(f"need labels [N] and a bool kd_mask [N] with N={n}, got {labels.shape}, {kd_mask.shape}")
    if (teacher_hidden is None) != (teacher_head is None):
        raise ValueError("teacher_hidden and teacher_head must be given together")
    vocab = student_head.shape[0]
    shared = vocab if shared_vocab is None else shared_vocab
    if not 0 < shared <= vocab:
        raise ValueError(f"shared_vocab must be in [1, {vocab}] (the student's head rows), got {shared_vocab}")
    if teacher_hidden is None:
        if kd_mask.any():
            raise ValueError("kd_mask selects rows but no teacher was given")
        return shared
    assert teacher_head is not None
    teacher_rows = teacher_head.shape[0]
    if (
        teacher_hidden.shape[0] != n
        or teacher_head.shape[1] != teacher_hidden.shape[1]
        or teacher_rows < shared
        or (shared_vocab is None and teacher_rows != vocab)
    ):
        raise ValueError(
            f"need teacher_hidden [N, Ht] and teacher_head [Vt, Ht] with Vt >= shared_vocab ({shared}; V={vocab} "
            f"when not given), got {teacher_hidden.shape}, {teacher_head.shape}"
        )
    if bool((labels[kd_mask] >= shared).any()):
        raise ValueError(f"kd_mask selects rows whose label is outside the {shared} shared ids; they get CE only")
    return shared
