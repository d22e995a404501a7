"""The loss: divergence identities, chunked == naive in value and gradient, masks, and bounded memory."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lingudistill.losses import LossParts, chunked_distill_loss, naive_distill_loss, token_divergence

N, H, HT, V = 13, 8, 6, 40


def make_batch(seed: int = 0, dtype: torch.dtype = torch.float32, n: int = N, v: int = V) -> dict[str, Any]:
    """Random student/teacher hidden states and heads, with a few ignored labels and a mixed kd_mask."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, v, (n,), generator=g)
    labels[torch.rand(n, generator=g) < 0.3] = -100
    return {
        "student_hidden": torch.randn(n, H, generator=g).to(dtype).requires_grad_(),
        "student_head": torch.randn(v, H, generator=g).to(dtype).requires_grad_(),
        "labels": labels,
        "kd_mask": torch.rand(n, generator=g) < 0.6,
        "teacher_hidden": torch.randn(n, HT, generator=g).to(dtype),
        "teacher_head": torch.randn(v, HT, generator=g).to(dtype),
    }


def options(**overrides: Any) -> dict[str, Any]:
    base = {
        "divergence": "forward_kl",
        "beta": 0.5,
        "temperature": 1.0,
        "ce_weight": 1.0,
        "kd_weight": 0.7,
        "ce_normalizer": 20.0,
        "kd_normalizer": 30.0,
        "chunk_size": 4,
    }
    return base | overrides


def loss_and_grads(loss_fn: Any, batch: dict[str, Any], scale: float = 1.0, **opts: Any) -> tuple[LossParts, ...]:
    """Runs loss_fn on fresh leaf copies of the batch; backpropagates scale * total."""
    leaves = {k: None if v is None else v.detach().clone().requires_grad_(v.requires_grad) for k, v in batch.items()}
    parts = loss_fn(**leaves, **options(**opts))
    (scale * parts.total).backward()
    return parts, leaves["student_hidden"].grad, leaves["student_head"].grad


@pytest.mark.parametrize("divergence,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.0), ("jsd", 0.3)])
@pytest.mark.parametrize("temperature", [0.7, 1.0, 2.0])
@pytest.mark.parametrize("chunk_size", [1, 4, 13, 64])
@pytest.mark.parametrize("softcap", [None, 3.0])
def test_chunked_matches_naive_in_value_and_gradient(
    divergence: str, beta: float, temperature: float, chunk_size: int, softcap: float | None
) -> None:
    batch = make_batch()
    opts = options(divergence=divergence, beta=beta, temperature=temperature, chunk_size=chunk_size)
    opts |= {"student_softcap": softcap, "teacher_softcap": None if softcap is None else 2.5}
    chunked, grad_hidden, grad_head = loss_and_grads(chunked_distill_loss, batch, scale=1.7, **opts)
    naive, ref_grad_hidden, ref_grad_head = loss_and_grads(naive_distill_loss, batch, scale=1.7, **opts)
    for got, want in [
        (chunked.total, naive.total),
        (chunked.per_token_ce, naive.per_token_ce),
        (chunked.per_token_kd, naive.per_token_kd),
        (grad_hidden, ref_grad_hidden),
        (grad_head, ref_grad_head),
    ]:
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert chunked.total.item() > 0


SHARED = 31  # the teacher knows ids 0..30; the student's head has V = 40 rows


def extended_vocab_batch(teacher_rows: int, seed: int = 0) -> dict[str, Any]:
    """A student head of V rows over a teacher head of `teacher_rows` (>= SHARED, padding rows past it); KD rows
    keep targets inside the shared ids, and a few CE-only rows have targets among the student's extra ids."""
    batch = make_batch(seed)
    g = torch.Generator().manual_seed(seed + 100)
    batch["teacher_head"] = torch.randn(teacher_rows, HT, generator=g)
    labels = batch["labels"]
    labels[batch["kd_mask"] & (labels >= SHARED)] %= SHARED
    extra = ~batch["kd_mask"]
    labels[extra] = torch.randint(SHARED, V, (int(extra.sum()),), generator=g)
    return batch


@pytest.mark.parametrize("teacher_rows", [SHARED, 36, V, 48])
@pytest.mark.parametrize("divergence,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.3)])
@pytest.mark.parametrize("chunk_size", [1, 4, 64])
@pytest.mark.parametrize("softcap", [None, 3.0])
def test_chunked_matches_naive_over_the_shared_vocabulary(
    teacher_rows: int, divergence: str, beta: float, chunk_size: int, softcap: float | None
) -> None:
    """A student whose vocabulary extends the teacher's: KD over the shared ids, CE over all, chunked == naive."""
    batch = extended_vocab_batch(teacher_rows)
    opts = options(divergence=divergence, beta=beta, temperature=1.5, chunk_size=chunk_size, shared_vocab=SHARED)
    opts |= {"student_softcap": softcap, "teacher_softcap": softcap}
    chunked, grad_hidden, grad_head = loss_and_grads(chunked_distill_loss, batch, scale=1.3, **opts)
    naive, ref_grad_hidden, ref_grad_head = loss_and_grads(naive_distill_loss, batch, scale=1.3, **opts)
    for got, want in [
        (chunked.total, naive.total),
        (chunked.per_token_ce, naive.per_token_ce),
        (chunked.per_token_kd, naive.per_token_kd),
        (grad_hidden, ref_grad_hidden),
        (grad_head, ref_grad_head),
    ]:
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert chunked.kd_sum > 0 and torch.all(grad_head[SHARED:] != 0), "CE must still train the extra rows"


def test_kd_over_the_shared_vocabulary_renormalises_both_distributions() -> None:
    """D is the divergence of the two softmaxes over ids 0..SHARED-1, whatever the other rows hold."""
    batch = extended_vocab_batch(48)
    parts, _, _ = loss_and_grads(naive_distill_loss, batch, shared_vocab=SHARED, temperature=2.0)
    rows = batch["kd_mask"]
    student = (batch["student_hidden"] @ batch["student_head"].T)[rows, :SHARED]
    teacher = (batch["teacher_hidden"] @ batch["teacher_head"].T)[rows, :SHARED]
    expected = token_divergence(student, teacher, "forward_kl", 0.5, 2.0)
    torch.testing.assert_close(parts.per_token_kd[rows], expected.detach())


def test_equal_shared_rows_give_zero_kd_whatever_the_extra_rows_hold() -> None:
    """Identity 1 with extended vocabularies: equal hidden states and equal heads on the shared ids give KD = 0,
    though the student has extra rows and the teacher untrained padding rows of its own."""
    batch = extended_vocab_batch(48)
    teacher_head = torch.randn(48, H, generator=torch.Generator().manual_seed(5))
    teacher_head[:SHARED] = batch["student_head"].detach()[:SHARED]
    batch |= {"teacher_hidden": batch["student_hidden"].detach(), "teacher_head": teacher_head}
    batch["kd_mask"][:] = True
    batch["labels"][batch["labels"] >= SHARED] = 0
    for divergence in ("forward_kl", "reverse_kl", "jsd"):
        parts, _, _ = loss_and_grads(chunked_distill_loss, batch, divergence=divergence, shared_vocab=SHARED)
        assert parts.kd_sum <= 1e-7, divergence
    batch["teacher_head"] = teacher_head[:V]
    parts, _, _ = loss_and_grads(chunked_distill_loss, batch)
    assert parts.kd_sum > 1e-3, "over all V rows the rows past the shared ids differ, so KD would not be 0"


def test_kd_rows_with_targets_outside_the_shared_vocabulary_are_refused() -> None:
    batch = extended_vocab_batch(SHARED)
    batch["kd_mask"][:] = True
    with pytest.raises(ValueError, match="outside the 31 shared ids"):
        chunked_distill_loss(**batch, **options(shared_vocab=SHARED))


@pytest.mark.parametrize("shared,teacher_rows", [(41, V), (0, V), (SHARED, 30), (None, 48)])
def test_inconsistent_vocabularies_are_rejected(shared: int | None, teacher_rows: int) -> None:
    batch = make_batch()
    batch["teacher_head"] = torch.randn(teacher_rows, HT)
    with pytest.raises(ValueError):
        chunked_distill_loss(**batch, **options(shared_vocab=shared))


def test_per_token_losses_are_zero_exactly_where_masked() -> None:
    batch = make_batch()
    parts, _, _ = loss_and_grads(chunked_distill_loss, batch)
    ignored, no_kd = batch["labels"] == -100, ~batch["kd_mask"]
    assert torch.all(parts.per_token_ce[ignored] == 0) and torch.all(parts.per_token_ce[~ignored] > 0)
    assert torch.all(parts.per_token_kd[no_kd] == 0) and torch.all(parts.per_token_kd[~no_kd] > 0)
    assert parts.per_token_ce.dtype == parts.per_token_kd.dtype == torch.float32
    torch.testing.assert_close(parts.ce_sum, parts.per_token_ce.sum())
    torch.testing.assert_close(parts.kd_sum, parts.per_token_kd.sum())
    assert not parts.ce_sum.requires_grad and not parts.per_token_kd.requires_grad


def test_total_is_the_weighted_step_mean_with_t_squared() -> None:
    batch = make_batch()
    parts, _, _ = loss_and_grads(chunked_distill_loss, batch, temperature=2.0)
    expected = 1.0 * parts.ce_sum / 20.0 + 0.7 * 2.0**2 * parts.kd_sum / 30.0
    torch.testing.assert_close(parts.total.detach(), expected)


def test_cross_entropy_term_equals_torch_cross_entropy() -> None:
    batch = make_batch()
    parts, _, _ = loss_and_grads(naive_distill_loss, batch, kd_weight=0.0, ce_normalizer=1.0)
    logits = batch["student_hidden"] @ batch["student_head"].T
    torch.testing.assert_close(parts.total, F.cross_entropy(logits, batch["labels"], reduction="sum"))


def test_frozen_head_and_frozen_hidden() -> None:
    batch = make_batch()
    batch["student_head"].requires_grad_(False)
    _, grad_hidden, grad_head = loss_and_grads(chunked_distill_loss, batch)
    _, ref_grad_hidden, _ = loss_and_grads(naive_distill_loss, batch)
    assert grad_head is None
    torch.testing.assert_close(grad_hidden, ref_grad_hidden, atol=1e-5, rtol=1e-5)

    batch = make_batch()
    batch["student_hidden"].requires_grad_(False)
    _, grad_hidden, grad_head = loss_and_grads(chunked_distill_loss, batch)
    _, _, ref_grad_head = loss_and_grads(naive_distill_loss, batch)
    assert grad_hidden is None
    torch.testing.assert_close(grad_head, ref_grad_head, atol=1e-5, rtol=1e-5)


def test_tied_head_gets_both_gradients() -> None:
    """The head is also the embedding that produced the hidden states: both paths add into one gradient."""
    grads = []
    for loss_fn in (chunked_distill_loss, naive_distill_loss):
        batch = make_batch()
        embedding = batch["student_head"].detach().clone().requires_grad_()
        hidden = torch.tanh(embedding[torch.arange(N) % V] @ torch.ones(H, H) / H)
        loss_fn(**(batch | {"student_hidden": hidden, "student_head": embedding}), **options()).total.backward()
        grads.append(embedding.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-5)


def test_bf16_inputs_accumulate_in_fp32() -> None:
    batch = make_batch(dtype=torch.bfloat16)
    parts, grad_hidden, grad_head = loss_and_grads(chunked_distill_loss, batch, divergence="jsd", chunk_size=3)
    reference, ref_grad_hidden, _ = loss_and_grads(naive_distill_loss, batch, divergence="jsd")
    assert parts.per_token_kd.dtype == torch.float32 and parts.total.dtype == torch.float32
    assert grad_hidden.dtype == grad_head.dtype == torch.bfloat16
    torch.testing.assert_close(parts.total, reference.total, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grad_hidden, ref_grad_hidden, atol=2e-2, rtol=2e-2)


def test_jsd_endpoints_are_forward_and_reverse_kl() -> None:
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(5, V, generator=g), torch.randn(5, V, generator=g)
    for jsd_beta, kl in [(0.0, "forward_kl"), (1.0, "reverse_kl")]:
        jsd = token_divergence(student, teacher, "jsd", jsd_beta, 1.5)
        torch.testing.assert_close(jsd, token_divergence(student, teacher, kl, 0.5, 1.5), atol=0, rtol=0)
    forward, reverse = (token_divergence(student, teacher, kl, 0.5, 1.0) for kl in ("forward_kl", "reverse_kl"))
    assert not torch.allclose(forward, reverse)


def test_forward_kl_equals_kl_div_on_a_hand_example() -> None:
    """p_t = [1/2, 1/2], p_s = [1/4, 3/4]: KL(p_t || p_s) = 1/2 ln 2 + 1/2 ln(2/3)."""
    student, teacher = torch.tensor([[0.25, 0.75]]).log(), torch.tensor([[0.5, 0.5]]).log()
    expected = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    got = token_divergence(student, teacher, "forward_kl", 0.5, 1.0)
    torch.testing.assert_close(got, torch.tensor([expected]))
    kl_div = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), reduction="none", log_target=True)
    torch.testing.assert_close(got, kl_div.sum(-1))
    reverse = token_divergence(student, teacher, "reverse_kl", 0.5, 1.0)
    torch.testing.assert_close(reverse, torch.tensor([0.25 * math.log(0.5) + 0.75 * math.log(1.5)]))


def test_jsd_mixture_gives_the_teacher_weight_beta() -> None:
    """GKD / TRL / Liger convention: m = beta * p_t + (1 - beta) * p_s, JSD = beta KL(p_t||m) + (1-beta) KL(p_s||m)."""
    p_s, p_t, beta = torch.tensor([0.2, 0.3, 0.5]), torch.tensor([0.6, 0.3, 0.1]), 0.1
    m = beta * p_t + (1 - beta) * p_s
    expected = beta * (p_t * (p_t / m).log()).sum() + (1 - beta) * (p_s * (p_s / m).log()).sum()
    got = token_divergence(p_s.log()[None], p_t.log()[None], "jsd", beta, 1.0)
    torch.testing.assert_close(got, expected[None])
    swapped = token_divergence(p_t.log()[None], p_s.log()[None], "jsd", 1 - beta, 1.0)
    torch.testing.assert_close(swapped, got)


@pytest.mark.parametrize("divergence,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.5), ("jsd", 0.2)])
def test_identical_teacher_and_student_give_zero_kd(divergence: str, beta: float) -> None:
    logits = torch.randn(64, 1000, generator=torch.Generator().manual_seed(2)) * 4
    assert token_divergence(logits, logits.clone(), divergence, beta, 2.0).abs().max() <= 1e-7

    batch = make_batch()
    batch |= {"teacher_hidden": batch["student_hidden"].detach(), "teacher_head": batch["student_head"].detach()}
    batch["kd_mask"][:] = True  # a matmul over a subset of rows may round differently from the full chunk's
    parts, _, _ = loss_and_grads(chunked_distill_loss, batch, divergence=divergence, beta=beta)
    assert parts.kd_sum <= 1e-7


@pytest.mark.parametrize("loss_fn", [chunked_distill_loss, naive_distill_loss])
def test_fully_masked_input_gives_zero_loss_and_zero_gradient(loss_fn: Any) -> None:
    batch = make_batch()
    batch["labels"][:] = -100
    batch["kd_mask"][:] = False
    parts, grad_hidden, grad_head = loss_and_grads(loss_fn, batch, ce_normalizer=0.0, kd_normalizer=0.0)
    assert parts.total.item() == 0 and parts.ce_sum.item() == 0 and parts.kd_sum.item() == 0
    assert torch.all(grad_hidden == 0) and torch.all(grad_head == 0)

    batch = make_batch() | {"teacher_hidden": None, "teacher_head": None}
    batch["labels"][:] = -100
    batch["kd_mask"][:] = False
    parts, grad_hidden, _ = loss_and_grads(loss_fn, batch, ce_normalizer=0.0, kd_normalizer=0.0)
    assert parts.total.item() == 0 and torch.all(grad_hidden == 0)


def test_zero_normaliser_drops_its_term_but_still_reports_it() -> None:
    batch = make_batch()
    no_kd, grad_hidden, _ = loss_and_grads(chunked_distill_loss, batch, kd_normalizer=0.0)
    ce_only, ref_grad_hidden, _ = loss_and_grads(chunked_distill_loss, batch, kd_weight=0.0)
    torch.testing.assert_close(no_kd.total, ce_only.total)
    torch.testing.assert_close(grad_hidden, ref_grad_hidden)
    assert no_kd.kd_sum > 0

    no_ce, _, _ = loss_and_grads(chunked_distill_loss, batch, ce_normalizer=0.0)
    torch.testing.assert_close(no_ce.total.detach(), 0.7 * no_ce.kd_sum / 30.0)


def test_kd_rows_without_a_teacher_are_an_error() -> None:
    batch = make_batch() | {"teacher_hidden": None, "teacher_head": None}
    with pytest.raises(ValueError, match="no teacher"):
        chunked_distill_loss(**batch, **options())
    batch["kd_mask"] = torch.zeros(N, dtype=torch.bool)
    parts = chunked_distill_loss(**batch, **options())
    assert parts.kd_sum.item() == 0 and parts.total.item() > 0


@pytest.mark.parametrize(
    "bad", [{"beta": 1.5}, {"temperature": 0.0}, {"divergence": "tvd"}, {"kd_normalizer": -1.0}, {"chunk_size": 0}]
)
def test_bad_options_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        chunked_distill_loss(**make_batch(), **options(**bad))


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor (in elements) that any operator produces while active."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.numel = max([self.numel] + [t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor)])
        return out


def test_chunked_loss_never_builds_more_than_chunk_size_rows_of_logits() -> None:
    n, v, chunk_size = 48, 8192, 16
    batch = make_batch(n=n, v=v)
    batch["kd_mask"][:] = True
    opts = options(divergence="jsd", chunk_size=chunk_size, student_softcap=30.0, teacher_softcap=30.0)
    largest = {}
    for name, loss_fn in [("chunked", chunked_distill_loss), ("naive", naive_distill_loss)]:
        with LargestTensor() as mode:
            loss_fn(**batch, **opts).total.backward()
        largest[name] = mode.numel
    assert largest["chunked"] <= chunk_size * v
    assert largest["naive"] >= n * v  # the probe does see full logits when they exist


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Liger's kernels need CUDA")
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_kd_term_matches_liger_fused_linear_jsd(beta: float) -> None:
    liger_jsd = pytest.importorskip("liger_kernel.transformers.fused_linear_jsd")
    temperature = 2.0
    batch = {k: v.cuda() for k, v in make_batch(n=64, v=512).items()}
    batch["kd_mask"] = batch["labels"] != -100
    n_kd = int(batch["kd_mask"].sum())
    hidden = batch["student_hidden"].detach().clone().requires_grad_()
    head = batch["student_head"].detach().clone().requires_grad_()
    liger_loss = liger_jsd.LigerFusedLinearJSD(jsd_beta=beta, temperature=temperature)
    liger = liger_loss(hidden, head, batch["teacher_hidden"], batch["teacher_head"], batch["labels"])
    liger.backward()
    # Liger's loss is the mean of D over unignored rows, without the T^2 factor.
    opts = {"divergence": "jsd", "beta": beta, "temperature": temperature, "ce_weight": 0.0, "kd_weight": 1.0}
    ours, grad_hidden, grad_head = loss_and_grads(chunked_distill_loss, batch, kd_normalizer=n_kd, **opts)
    torch.testing.assert_close(ours.total / temperature**2, liger, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grad_hidden / temperature**2, hidden.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grad_head / temperature**2, head.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Liger's kernels need CUDA")
def test_ce_term_matches_liger_fused_linear_cross_entropy() -> None:
    liger_ce = pytest.importorskip("liger_kernel.transformers.fused_linear_cross_entropy")
    batch = {k: v.cuda() for k, v in make_batch(n=64, v=512).items()}
    batch |= {"teacher_hidden": None, "teacher_head": None, "kd_mask": torch.zeros(64, dtype=torch.bool).cuda()}
    hidden = batch["student_hidden"].detach().clone().requires_grad_()
    head = batch["student_head"].detach().clone().requires_grad_()
    liger = liger_ce.LigerFusedLinearCrossEntropyLoss()(head, hidden, batch["labels"])
    liger.backward()
    n_ce = int((batch["labels"] != -100).sum())
    ours, grad_hidden, grad_head = loss_and_grads(chunked_distill_loss, batch, ce_normalizer=n_ce)
    torch.testing.assert_close(ours.total, liger, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grad_hidden, hidden.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grad_head, head.grad, atol=1e-4, rtol=1e-4)
