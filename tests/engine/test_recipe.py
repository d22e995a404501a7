"""Training end to end on the tiny job: METHOD.md identities 2-4, resume equivalence, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from lingudistill import checkpoint
from lingudistill.models.encoding import Encoder, collate
from lingudistill.models.loading import load_student, load_teacher, parameter_count
from lingudistill.objective import DistillationObjective
from lingudistill.recipe import MetricsFile, Recipe, TrainingCallback
from lingudistill.spec import load_spec


def _metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _fixed_batch_kd(recipe: Recipe, spec) -> float:
    """KD on a fixed batch of text records, every one distilled (a stable probe of student-teacher distance)."""
    records = recipe.sampler.records["text"][:6]
    encoder = Encoder(recipe.student.adapter, recipe.student.processor, 128)
    batch = collate([encoder.encode(r, distill=True) for r in records], recipe.student.adapter, 0)
    objective = DistillationObjective(recipe.student.model, recipe.teacher.model, recipe.student.adapter, spec.method)
    with torch.no_grad():
        return float(objective(batch, 1.0, 1.0).parts.kd_sum)


def test_kd_falls_and_teacher_is_bitwise_unchanged(tiny_job):
    spec = load_spec(tiny_job)
    spec.training.max_steps = 20
    spec.mixture[0].weight = 4.0  # mostly text, so the KD term has work to do
    recipe = Recipe(spec, tiny_job.parent / "out")
    teacher_before = {k: v.clone() for k, v in recipe.teacher.model.state_dict().items()}
    kd_before = _fixed_batch_kd(recipe, spec)
    recipe.train()
    kd_after = _fixed_batch_kd(recipe, spec)
    assert kd_before > 0
    assert kd_after < 0.8 * kd_before
    for name, tensor in recipe.teacher.model.state_dict().items():
        assert torch.equal(tensor, teacher_before[name]), f"teacher parameter {name} changed"
    assert all(p.grad is None for p in recipe.teacher.model.parameters())


def test_saved_student_reloads_with_the_input_parameter_count(tiny_job):
    spec = load_spec(tiny_job)
    result = Recipe(spec, tiny_job.parent / "out").train()
    original = load_student(spec.student).model
    reloaded = AutoModelForImageTextToText.from_pretrained(result.model_dir)
    assert parameter_count(reloaded) == parameter_count(original) == result.parameter_count
    assert (result.model_dir / "model.safetensors").is_file()
    assert not list(result.model_dir.glob("*.bin"))
    assert (result.model_dir / "processor_config.json").is_file()


def test_metrics_file_has_one_record_per_step_with_the_contract_keys(tiny_job):
    spec = load_spec(tiny_job)
    out = tiny_job.parent / "out"
    Recipe(spec, out, callbacks=[MetricsFile(out / "metrics.jsonl")]).train()
    records = _metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, spec.training.max_steps + 1))
    for key in ("loss", "loss_ce", "loss_kd", "lr", "grad_norm", "tokens_per_s", "step_time_s", "peak_memory_mb"):
        assert all(key in r for r in records), key
    assert any("loss_kd/text" in r for r in records)
    assert all(r.get("loss_kd/vqa", 0.0) == 0.0 for r in records), "selective KD must skip the multimodal source"


class _StopAfter(TrainingCallback):
    def __init__(self, steps: int) -> None:
        self.steps, self.seen = steps, 0

    def on_step(self, record):
        self.seen = record["step"]

    def should_stop(self) -> bool:
        return self.seen >= self.steps


def test_resume_gives_the_losses_of_an_uninterrupted_run(tiny_job):
    spec = load_spec(tiny_job)
    full, split = tiny_job.parent / "full", tiny_job.parent / "split"
    Recipe(spec, full, callbacks=[MetricsFile(full / "metrics.jsonl")]).train()
    Recipe(spec, split, callbacks=[MetricsFile(split / "metrics.jsonl"), _StopAfter(4)]).train()
    assert checkpoint.latest_valid(split / "checkpoints").name == "step-000000003"
    resumed = Recipe(spec, split, callbacks=[MetricsFile(split / "metrics.jsonl")]).train(resume=True)
    assert resumed.steps == spec.training.max_steps
    full_losses = [r["loss"] for r in _metrics(full / "metrics.jsonl")]
    split_records = _metrics(split / "metrics.jsonl")
    assert [r["step"] for r in split_records] == list(range(1, spec.training.max_steps + 1))
    torch.testing.assert_close([r["loss"] for r in split_records], full_losses, rtol=1e-5, atol=1e-6)


def test_resume_skips_a_checkpoint_whose_files_do_not_match_the_manifest(tiny_job):
    spec = load_spec(tiny_job)
    spec.training.max_steps = 7  # checkpoints at steps 3 and 6
    out = tiny_job.parent / "out"
    Recipe(spec, out).train()
    newest, older = checkpoint.complete_checkpoints(out / "checkpoints")[::-1][:2]
    (newest / "model.safetensors").write_bytes(b"truncated")
    assert checkpoint.latest_valid(out / "checkpoints") == older


def test_plain_fine_tuning_never_loads_the_teacher(tiny_job):
    spec = load_spec(tiny_job)
    spec.method.kd_sources = "none"
    recipe = Recipe(spec, tiny_job.parent / "out")
    assert recipe.teacher is None
    assert recipe.train_step()["loss_kd"] == 0.0


def test_vision_is_frozen_by_default_and_groups_have_their_rates(tiny_job):
    spec = load_spec(tiny_job)
    spec.training.lr, spec.training.lr_projector = 1e-4, 5e-4
    recipe = Recipe(spec, tiny_job.parent / "out")
    groups = {g["name"]: g["initial_lr"] for g in recipe.optimizer.param_groups}
    assert groups == {"decoder": 1e-4, "projector": 5e-4}
    assert not any(p.requires_grad for p in recipe.student.adapter.vision(recipe.student.model).parameters())


def test_teacher_loaded_for_training_is_frozen(tiny_job):
    spec = load_spec(tiny_job)
    teacher = load_teacher(spec.teacher)
    assert not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())


def test_gradient_checkpointing_gives_the_same_step(tiny_job):
    spec = load_spec(tiny_job)
    plain = Recipe(spec, tiny_job.parent / "plain").train_step()
    spec.training.gradient_checkpointing = True
    checkpointed = Recipe(spec, tiny_job.parent / "ckpt").train_step()
    assert checkpointed["loss_kd"] > 0, "K/V must still reach the teacher with gradient checkpointing on"
    for key in ("loss", "loss_ce", "loss_kd", "grad_norm"):
        assert abs(plain[key] - checkpointed[key]) < 1e-5, key


# --- length grouping within a step (group_by_length: step) ----------------------------------------------------------
def _rows(batches: list[dict]) -> list[list[tuple[int, ...]]]:
    """Each micro-batch's records as their real (unpadded) token ids."""
    return [
        [tuple(ids[mask.bool()].tolist()) for ids, mask in zip(b["input_ids"], b["attention_mask"], strict=True)]
        for b in batches
    ]


def _step_records(rows: list[list[tuple[int, ...]]]) -> list[tuple[int, ...]]:
    """The step's records as a sorted list (a multiset), whichever micro-batch holds each."""
    return sorted(row for micro_batch in rows for row in micro_batch)


def _grouping_spec(tiny_job, mode: str, grad_accum: int):
    spec = load_spec(tiny_job)
    spec.training.group_by_length, spec.training.grad_accum = mode, grad_accum
    return spec


def _one_step(spec, out: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The step's record and the gradients the optimiser steps with (after clipping): they fix the update.

    (The parameters after the step are not compared: AdamW's first step moves each by about lr x sign(gradient),
    so a gradient element near 0 turns float rounding of the summation order into a step of up to lr.)"""
    recipe = Recipe(spec, out)
    model = recipe.student.model
    gradients: dict[str, torch.Tensor] = {}

    def capture(optimizer, args, kwargs) -> None:
        gradients.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

    recipe.optimizer.register_step_pre_hook(capture)
    return recipe.train_step(), gradients


def test_grouping_within_a_step_keeps_its_loss_and_its_update(tiny_job):
    """The step's records are re-partitioned (so per-micro-batch means would differ), yet the loss and the
    gradient the optimiser steps with are the plain step's: both loss terms are means over the step's tokens."""
    off, step = _grouping_spec(tiny_job, "off", 4), _grouping_spec(tiny_job, "step", 4)
    plain_rows = _rows(Recipe(off, tiny_job.parent / "probe-off")._micro_batches())
    grouped_batches = Recipe(step, tiny_job.parent / "probe-step")._micro_batches()
    grouped_rows = _rows(grouped_batches)
    assert _step_records(grouped_rows) == _step_records(plain_rows), "the same records"
    assert [sorted(b) for b in grouped_rows] != [sorted(b) for b in plain_rows], "in other micro-batches"
    plain_record, plain_grads = _one_step(off, tiny_job.parent / "off")
    record, grads = _one_step(step, tiny_job.parent / "step")
    assert plain_record["loss_kd"] > 0 and plain_record["loss_ce"] > 0
    for key in ("loss", "loss_ce", "loss_kd", "grad_norm", "ce_tokens", "kd_tokens"):
        assert record[key] == pytest.approx(plain_record[key], rel=1e-5, abs=1e-7), key
    assert grads.keys() == plain_grads.keys() and grads
    torch.testing.assert_close(grads, plain_grads, rtol=1e-5, atol=1e-7)


def test_grouping_within_a_step_keeps_each_steps_records_and_pads_less(tiny_job):
    plain = Recipe(_grouping_spec(tiny_job, "off", 4), tiny_job.parent / "off")
    grouped = Recipe(_grouping_spec(tiny_job, "step", 4), tiny_job.parent / "step")
    saved = 0
    for _ in range(5):
        plain_batches, grouped_batches = plain._micro_batches(), grouped._micro_batches()
        assert _step_records(_rows(grouped_batches)) == _step_records(_rows(plain_batches))
        computed = [sum(b["attention_mask"].numel() for b in bs) for bs in (plain_batches, grouped_batches)]
        assert computed[1] <= computed[0]
        saved += computed[0] - computed[1]
    assert saved > 0
    assert grouped.sampler.state_dict() == plain.sampler.state_dict(), "the sampler drew the same records"


def test_grouping_within_a_step_changes_nothing_with_one_micro_batch(tiny_job):
    out = {mode: tiny_job.parent / mode for mode in ("off", "step")}
    for mode, folder in out.items():
        spec = _grouping_spec(tiny_job, mode, 1)
        spec.training.max_steps = 4
        Recipe(spec, folder, callbacks=[MetricsFile(folder / "metrics.jsonl")]).train()
    drop = ("tokens_per_s", "step_time_s", "peak_memory_mb")
    records = {
        mode: [{k: v for k, v in r.items() if k not in drop} for r in _metrics(f / "metrics.jsonl")]
        for mode, f in out.items()
    }
    assert records["step"] == records["off"], "bit-identical losses"
    weights = [load_file(f / "model" / "model.safetensors") for f in out.values()]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
