"""Training end to end on the tiny job: METHOD.md identities 2-4, resume equivalence, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import torch
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
