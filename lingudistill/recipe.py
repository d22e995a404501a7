"""The LinguDistill training recipe: setup, the step, the loop, checkpoints, cleanup.

One optimiser step draws `grad_accum` micro-batches from the weighted mixture (by default re-partitioned by
length within the step, lingudistill/data/grouping.py), counts their response tokens first (both loss terms are
means over the whole step, METHOD.md), then runs the objective on each micro-batch and steps AdamW with
per-group learning rates under a warm-up + cosine schedule. Only the student is trained;
the teacher is frozen and dropped at the end, so the repaired model has exactly the input's parameters.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lingudistill import checkpoint, parallel
from lingudistill.data.grouping import group_within_step
from lingudistill.data.mixture import LengthGroupedSampler, MixtureSampler
from lingudistill.data.records import Record
from lingudistill.data.sources import load_sources
from lingudistill.models.compat import check_compatibility, shared_vocab_size
from lingudistill.models.encoding import IGNORE, Encoder, Example, collate
from lingudistill.models.loading import Student, Teacher, load_student, load_teacher, parameter_count
from lingudistill.objective import DistillationObjective, MicroBatchLoss
from lingudistill.spec import JobSpec


class TrainingCallback:
    """Hooks the CLI and the worker use to observe and steer training. Override what you need.

    On several ranks only rank 0 calls them, unless `every_rank`: a callback that runs the sharded student (a
    collective) must run on every rank."""

    every_rank = False

    def on_train_begin(self, recipe: Recipe) -> None: ...

    def on_step(self, record: dict[str, Any]) -> None: ...

    def on_checkpoint(self, step: int, folder: Path, manifest: dict[str, Any]) -> None: ...

    def should_stop(self) -> bool:
        return False

    def should_pause(self) -> bool:
        """Stop like should_stop, after a checkpoint at this step boundary (unless one is there already)."""
        return False

    def on_train_end(self, result: TrainResult) -> None: ...


@dataclass
class TrainResult:
    model_dir: Path
    steps: int
    stopped_early: bool
    parameter_count: int
    last_record: dict[str, Any] = field(default_factory=dict)


def pick_device() -> torch.device:
    requested = os.environ.get("LINGUDISTILL_DEVICE")
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Recipe:
    """Fails fast in its constructor: models, compatibility and data are checked before the first step."""

    def __init__(
        self,
        spec: JobSpec,
        output_dir: Path,
        *,
        callbacks: Sequence[TrainingCallback] = (),
        progress: bool = False,
        student: Student | None = None,
        teacher: Teacher | None = None,
    ) -> None:
        self.spec = spec.resolved() if spec.training.seed is None else spec
        self.output_dir = Path(output_dir)
        self.dist = parallel.topology()
        self.callbacks = [c for c in callbacks if self.dist.is_main or c.every_rank]  # rank 0 reports and writes
        self.progress = progress
        self.device = pick_device()
        torch.manual_seed(self.spec.seed)
        # sharded: load on the CPU, fully_shard moves each rank's shard to its device
        self.student = student or load_student(self.spec.student, device="cpu" if self.dist.enabled else self.device)
        self.teacher = teacher or self._load_teacher()
        self._place_models()
        if self.teacher is not None:
            check_compatibility(self.student, self.teacher, self.spec.method)
        self.input_parameter_count = parameter_count(self.student.model)
        self._configure_student()
        if self.dist.enabled:
            parallel.shard_student(self.student.model, self.student.adapter)
        self.encoder = Encoder(self.student.adapter, self.student.processor, self.spec.training.max_seq_len)
        self.sampler = self._build_sampler()
        self._distilled = {source.name: self.spec.distills(source) for source in self.spec.mixture}
        # the student's adapter as the objective and evaluation must use it (lm_head gathered when sharded)
        self.adapter = parallel.ShardedAdapter(self.student.adapter) if self.dist.enabled else self.student.adapter
        self.objective = DistillationObjective(
            self.student.model,
            self.teacher.model if self.teacher else None,
            self.adapter,
            self.spec.method,
            shared_vocab_size(self.teacher) if self.teacher else None,
        )
        self.optimizer = torch.optim.AdamW(self._parameter_groups(), weight_decay=self.spec.training.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        self.checkpointed_step = 0  # the step of the newest checkpoint saved or restored (0: none)
        self.pad_token_id = self.objective.pad_token_id

    # --- setup --------------------------------------------------------------------------------------------------
    def _uses_teacher(self) -> bool:
        return any(self.spec.distills(source) for source in self.spec.mixture)

    def _load_teacher(self) -> Teacher | None:
        if not self._uses_teacher():
            return None  # plain fine-tuning (kd_sources: none) never needs the teacher in memory
        return load_teacher(self.spec.teacher, dtype=self._teacher_dtype(), device=self.device)

    def _place_models(self) -> None:
        """Models handed in (the pipeline validates on the CPU) move to this run's device."""
        if not self.dist.enabled:
            self.student.model.to(self.device)
        if self.teacher is not None:
            self.teacher.model.to(self.device, dtype=self._teacher_dtype())

    def _teacher_dtype(self) -> torch.dtype:
        # On GPU the frozen teacher is held in bf16: it only produces targets, and memory is the budget.
        return torch.bfloat16 if self.device.type == "cuda" else torch.float32

    def _configure_student(self) -> None:
        model, adapter, training = self.student.model, self.student.adapter, self.spec.training
        model.train()
        adapter.vision(model).requires_grad_(not training.freeze_vision)
        if training.gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if training.compile:
            adapter.decoder(model).compile()

    def _parameter_groups(self) -> list[dict[str, Any]]:
        model, adapter, training = self.student.model, self.student.adapter, self.spec.training
        projector = {id(p) for p in adapter.projector(model).parameters()}
        vision = {id(p) for p in adapter.vision(model).parameters()}
        groups: dict[str, list[torch.nn.Parameter]] = {"decoder": [], "projector": [], "vision": []}
        for parameter in {id(p): p for p in model.parameters() if p.requires_grad}.values():
            group = "projector" if id(parameter) in projector else "vision" if id(parameter) in vision else "decoder"
            groups[group].append(parameter)
        rates = {"decoder": training.lr, "projector": training.lr_projector, "vision": training.lr_vision}
        return [{"name": name, "params": ps, "lr": rates[name]} for name, ps in groups.items() if ps]

    def _lr_factor(self, step: int) -> float:
        """Linear warm-up, then cosine decay to min_lr_ratio of the peak."""
        training = self.spec.training
        warmup = int(training.warmup_ratio * training.max_steps)
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, training.max_steps - warmup)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return training.min_lr_ratio + (1 - training.min_lr_ratio) * cosine

    def _build_sampler(self) -> MixtureSampler | LengthGroupedSampler:
        records = load_sources(self.spec.mixture)
        weights = {source.name: source.weight for source in self.spec.mixture}
        mixture = MixtureSampler(records, weights, seed=self.spec.seed)
        if self.spec.training.group_by_length != "pool":
            return mixture
        micro_batch = self.spec.training.batch_size * self.dist.world_size  # the global micro-batch every rank draws
        return LengthGroupedSampler(mixture, micro_batch, self._prompt_and_response_lengths)

    def _prompt_and_response_lengths(self, record: Record) -> tuple[int, int]:
        return _lengths(self.encoder.encode(record))  # once per record per run: the sampler remembers it

    # --- the step -----------------------------------------------------------------------------------------------
    def _micro_batches(self) -> list[dict[str, Any]]:
        size, rank, accum = self.spec.training.batch_size, self.dist.rank, self.spec.training.grad_accum
        global_size = size * self.dist.world_size
        # every rank draws the step's global micro-batches and keeps its slice of each: one data order for any GPU
        # count (the grouping below is a function of the step's global records, so every rank cuts alike)
        drawn = [self.sampler.next() for _ in range(accum * global_size)]
        encoded: dict[int, Example] = {}  # index into drawn -> example, so no record is encoded twice
        order = list(range(len(drawn)))
        if self.spec.training.group_by_length == "step" and accum > 1:
            order = group_within_step(self._step_lengths(drawn, encoded), global_size)
        batches = []
        for start in range(0, len(order), global_size):
            mine = order[start + rank * size : start + (rank + 1) * size]
            examples = [encoded[i] if i in encoded else self._encode(drawn[i]) for i in mine]
            batches.append(_to_device(collate(examples, self.student.adapter, self.pad_token_id), self.device))
        return batches

    def _encode(self, record: Record) -> Example:
        return self.encoder.encode(record, distill=self._distilled[record.source])

    def _step_lengths(self, drawn: list[Record], encoded: dict[int, Example]) -> list[tuple[int, int]]:
        """(prompt, response) tokens of each of the step's global records. Each rank encodes the records of its
        slices as drawn (into `encoded`) and the ranks exchange the lengths: one process encodes each record once."""
        size, rank = self.spec.training.batch_size, self.dist.rank
        global_size = size * self.dist.world_size
        for i, record in enumerate(drawn):
            if (i % global_size) // size == rank:
                encoded[i] = self._encode(record)
        local = {i: _lengths(example) for i, example in encoded.items()}
        lengths = {i: pair for part in parallel.all_gather_object(local) for i, pair in part.items()}
        return [lengths[i] for i in range(len(drawn))]

    def _autocast(self) -> Any:
        precision = self.spec.training.precision
        use_bf16 = precision == "bf16" or (precision == "auto" and self.device.type == "cuda")
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()

    def train_step(self) -> dict[str, Any]:
        started = time.perf_counter()
        batches = self._micro_batches()
        ce_tokens, kd_tokens = _count_supervised_tokens(batches, self.objective.distilled_tokens)
        losses: list[MicroBatchLoss] = []
        for batch in batches:
            with self._autocast():
                loss = self.objective(batch, ce_normalizer=ce_tokens, kd_normalizer=kd_tokens)
            loss.parts.total.backward()
            losses.append(loss)
        # clip the gradient, then step
        trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        grad_norm = parallel.local_value(torch.nn.utils.clip_grad_norm_(trainable, self.spec.training.max_grad_norm))
        lrs = {group["name"]: group["lr"] for group in self.optimizer.param_groups}
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        return self._record(losses, ce_tokens, kd_tokens, grad_norm, lrs, tokens, time.perf_counter() - started)

    def _record(self, losses, ce_tokens, kd_tokens, grad_norm, lrs, tokens, seconds) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        local = [
            sum(float(loss.parts.total.detach()) for loss in losses),
            sum(float(loss.parts.ce_sum) for loss in losses),
            sum(float(loss.parts.kd_sum) for loss in losses),
            tokens,
        ]
        total, ce_sum, kd_sum, tokens = parallel.all_reduce_sum(local, self.device)  # sums over all ranks
        record: dict[str, Any] = {
            "step": self.step,
            "loss": total,
            "loss_ce": ce_sum / ce_tokens if ce_tokens else 0.0,
            "loss_kd": kd_sum / kd_tokens if kd_tokens else 0.0,
            "lr": lrs.get("decoder", next(iter(lrs.values()))),
            **{f"lr/{name}": value for name, value in lrs.items()},
            "grad_norm": float(grad_norm),
            "ce_tokens": ce_tokens,
            "kd_tokens": kd_tokens,
            "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
            "step_time_s": seconds,
            "peak_memory_mb": _peak_memory_mb(self.device),
        }
        record.update(_per_source(losses, [source.name for source in self.spec.mixture], self.device))
        return record

    # --- the loop -----------------------------------------------------------------------------------------------
    def train(self, *, resume: bool = False) -> TrainResult:
        if resume:
            self.restore_latest()
        for callback in self.callbacks:
            callback.on_train_begin(self)
        total = self.spec.training.max_steps
        bar = tqdm(total=total, initial=self.step, desc="training", unit="step", disable=not self.progress)
        record: dict[str, Any] = {}
        stopped = False
        while self.step < total:
            if parallel.any_rank(any(callback.should_stop() for callback in self.callbacks), self.device):
                stopped = True
                break
            if parallel.any_rank(any(callback.should_pause() for callback in self.callbacks), self.device):
                if self.step > self.checkpointed_step:  # a resume continues exactly from here
                    self.save_checkpoint()
                stopped = True
                break
            record = self.train_step()
            for callback in self.callbacks:
                callback.on_step(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", kd=f"{record['loss_kd']:.4f}")
            # checkpoint
            if self.step % self.spec.training.checkpoint_every == 0 and self.step < total:
                self.save_checkpoint()
        bar.close()
        result = TrainResult(self.save_model(), self.step, stopped, self.input_parameter_count, record)
        for callback in self.callbacks:
            callback.on_train_end(result)
        return result

    # --- checkpoints ----------------------------------------------------------------------------------------------
    @property
    def checkpoint_root(self) -> Path:
        return self.output_dir / "checkpoints"

    def save_checkpoint(self) -> Path:
        state = {
            "step": self.step,
            "scheduler": self.scheduler.state_dict(),
            "rng": checkpoint.rng_state(),
            "sampler": self.sampler.state_dict(),
        }
        keep = self.spec.training.keep_checkpoints
        if self.dist.enabled:  # model and optimiser through DCP (shards of every rank), the rest as below
            folder, manifest = parallel.save_checkpoint(
                self.checkpoint_root, self.step, self.student.model, self.optimizer, self._save_student, state, keep
            )
        else:
            state["optimizer"] = self.optimizer.state_dict()
            folder, manifest = checkpoint.save(self.checkpoint_root, self.step, self._save_student, state, keep)
        self.checkpointed_step = self.step
        for callback in self.callbacks:
            callback.on_checkpoint(self.step, folder, manifest)
        return folder

    def restore_latest(self) -> Path | None:
        # rank 0 verifies the manifests, so every rank resumes from the same folder
        folder = parallel.broadcast_object(checkpoint.latest_valid(self.checkpoint_root) if self.dist.is_main else None)
        if folder is None:
            return None
        self.restore(folder)
        return folder

    def restore(self, folder: Path) -> None:
        """Continue from a checkpoint: student weights, optimiser, schedule, RNG and the data cursor.

        Reads both formats on any GPU count: DCP (written by a sharded run) and plain (a single-process run)."""
        state = checkpoint.load_training_state(folder)
        if parallel.is_sharded(folder):
            parallel.load_sharded(folder, self.student.model, self.optimizer)
        elif self.dist.enabled:
            parallel.load_unsharded(folder, self.student.model, self.optimizer, state["optimizer"])
        else:
            # from_pretrained undoes any key renaming save_pretrained applied; strict loading catches a wrong folder.
            saved = type(self.student.model).from_pretrained(folder, use_safetensors=True, trust_remote_code=False)
            self.student.model.load_state_dict(saved.state_dict(), strict=True)
            del saved
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        checkpoint.restore_rng_state(state["rng"])
        self.sampler.load_state_dict(state["sampler"])
        self.step = self.checkpointed_step = int(state["step"])

    def _save_student(self, folder: Path) -> None:
        if not self.dist.enabled:
            self.student.model.save_pretrained(folder, safe_serialization=True)
            return
        full = parallel.full_model_state(self.student.model)  # a collective: every rank gathers
        if self.dist.is_main:
            self.student.model.save_pretrained(folder, state_dict=full, safe_serialization=True)

    def save_model(self) -> Path:
        """The repaired student as an HF folder (weights, config, processor) with the input's parameter count."""
        folder = self.output_dir / "model"
        count = parameter_count(self.student.model)
        if count != self.input_parameter_count:
            raise RuntimeError(f"the student has {count} parameters, the input had {self.input_parameter_count}")
        self._save_student(folder)
        if self.dist.is_main:
            self.student.processor.save_pretrained(folder)
        return folder


def train(
    spec: JobSpec,
    output_dir: Path,
    *,
    resume: bool = False,
    callbacks: Sequence[TrainingCallback] = (),
    progress: bool = False,
) -> TrainResult:
    return Recipe(spec, output_dir, callbacks=callbacks, progress=progress).train(resume=resume)


class MetricsFile(TrainingCallback):
    """DIR/metrics.jsonl: one JSON object per optimiser step; on resume, steps past the checkpoint are dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_begin(self, recipe: Recipe) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [line for line in _read_lines(self.path) if json.loads(line)["step"] <= recipe.step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def on_step(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def _read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _count_supervised_tokens(
    batches: list[dict[str, Any]], distilled_tokens: Callable[[dict[str, Any]], int]
) -> tuple[int, int]:
    """The step's CE and KD token counts (over every rank): the means' divisors. KD counts what the objective
    distils, which leaves out targets outside the teacher's vocabulary."""
    ce = kd = 0
    for batch in batches:
        ce += int((batch["labels"][:, 1:] != IGNORE).sum())
        kd += distilled_tokens(batch)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        counts = torch.tensor([ce, kd], device=batches[0]["input_ids"].device)
        torch.distributed.all_reduce(counts)
        ce, kd = (int(c) for c in counts.tolist())
    return ce, kd


def _per_source(losses: list[MicroBatchLoss], names: list[str], device: torch.device) -> dict[str, float]:
    totals = {name: [0.0, 0.0, 0.0] for name in names}
    for loss in losses:
        for source, (ce, kd, count) in loss.per_source().items():
            total = totals[source]
            total[0] += ce
            total[1] += kd
            total[2] += count
    summed = parallel.all_reduce_sum([value for name in names for value in totals[name]], device)
    record = {}
    for i, source in enumerate(names):
        ce, kd, count = summed[3 * i : 3 * i + 3]
        if not count:
            continue
        record[f"loss_ce/{source}"] = ce / count
        record[f"loss_kd/{source}"] = kd / count
    return record


def _lengths(example: Example) -> tuple[int, int]:
    return example.prompt_length, len(example.input_ids) - example.prompt_length


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
