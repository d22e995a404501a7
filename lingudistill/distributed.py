"""Multi-GPU jobs on one node: torchrun, an FSDP2-sharded student, and checkpoints resumable on any GPU count.

`resources.gpus: N` runs the training child as

    python -m torch.distributed.run --standalone --nproc-per-node N -m lingudistill.distributed SPEC --output DIR

(`launch_command` builds it). Every rank runs the same recipe:
- The student is sharded with FSDP2: one `fully_shard` group per decoder layer, one for the rest of the backbone
  (embeddings, vision tower, projector, final norm: the module whose forward the objective calls), and the root,
  the whole model, whose only own parameter is an untied lm_head. The vision tower is not a group of its own:
  a rank whose micro-batch has no image skips it, and a group that only some ranks enter would hang the others.
- The teacher is frozen and replicated, not sharded: it runs only on the distilled rows of a micro-batch, so
  ranks call it a different number of times (or not at all), which a sharded teacher (an all-gather per call)
  cannot allow. It is held in bf16 on GPU and has no gradient or optimiser state, so a copy per GPU is the
  smaller cost. The KV hand-over is per rank: each rank's teacher continues from its own rows' K/V.
- Data: one mixture sampler, identical on every rank, draws `batch_size x world_size` records per micro-batch
  and rank r keeps the r-th slice. So the global batch is the one a single process with a world-size-times
  larger batch would see, and the sampler state does not depend on the GPU count.
- Loss: the token counts are all-reduced before the step (recipe), so each rank's loss is its share of the mean
  over all ranks' tokens; gradients are therefore summed across ranks (gradient divide factor 1), not averaged.
- Checkpoints: model and optimiser through torch.distributed.checkpoint (DCP, `dcp/` in the checkpoint folder),
  which reshards on load, so a job resumes on a different number of GPUs (or in one process). The HF
  safetensors copy of the student, in checkpoints and in DIR/model, is saved by rank 0 from a gathered state dict.
- Only rank 0 runs callbacks: it writes metrics.jsonl, events.jsonl, the model and the report.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, Partial

from lingudistill import checkpoint
from lingudistill.launch import EVENTS, STOP_FILE, launch_command  # noqa: F401 - launch_command is re-exported

SHARDED_STATE = "dcp"  # folder of a checkpoint that holds the DCP model + optimiser state
DEFAULT_TIMEOUT_S = 3600  # rank 0 scores the input models before training while the others wait


@dataclass(frozen=True)
class Topology:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or (dist.is_available() and dist.is_initialized())

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def topology() -> Topology:
    """This process's place in the job; a plain single-process run when no process group is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return Topology()
    return Topology(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def init_process_group(timeout_s: float | None = None) -> Topology:
    """nccl on CUDA (one GPU per local rank), gloo on CPU; the env:// variables come from torchrun."""
    timeout = timedelta(seconds=timeout_s or float(os.environ.get("LINGUDISTILL_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S)))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl", timeout=timeout, device_id=torch.cuda.current_device())
    else:
        dist.init_process_group("gloo", timeout=timeout)
    return topology()


# --- sharding -----------------------------------------------------------------------------------------------------
def shard_student(model: torch.nn.Module, adapter: Any) -> None:
    """FSDP2 over the student: each decoder layer, the backbone the objective calls, then the root."""
    for layer in adapter.decoder(model).layers:
        fully_shard(layer)
    backbone = adapter.base_forward(model)
    if backbone is not model:
        fully_shard(backbone)
    fully_shard(model)
    # The loss is a sum over ranks of each rank's share of the global mean: sum the gradients, do not average.
    # Unused parameters (the projector on a rank without images) still join the reduce-scatter, as zeros.
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # a plain sum: gloo has no PREMUL_SUM
            module.set_reduce_scatter_unused_params(True, recurse=False)


def gathered_weight(weight: torch.Tensor) -> torch.Tensor:
    """A parameter used outside its module's forward (lm_head in the chunked loss), whole on every rank.

    The backward turns each rank's partial gradient into the summed gradient of the local shard."""
    if isinstance(weight, DTensor):
        return weight.full_tensor(grad_placements=[Partial()] * weight.device_mesh.ndim)
    return weight


class ShardedAdapter:
    """The student's family adapter, except that lm_head's weight comes whole (gathered_weight) on each access.

    The objective computes lm_head outside any forward (chunked loss on hidden states), where FSDP2 leaves the
    root's parameters sharded. Everything else is the wrapped adapter's."""

    def __init__(self, adapter: Any) -> None:
        self._adapter = adapter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)

    def lm_head(self, model: torch.nn.Module) -> Any:
        return _GatheredLinear(self._adapter.lm_head(model))


class _GatheredLinear:
    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    @property
    def weight(self) -> torch.Tensor:
        return gathered_weight(self.module.weight)


def local_value(value: torch.Tensor) -> torch.Tensor:
    return value.full_tensor() if isinstance(value, DTensor) else value


def all_reduce_sum(values: Sequence[float], device: torch.device) -> list[float]:
    if not topology().enabled:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any: all ranks must stop at the same step."""
    if not topology().enabled:
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def broadcast_object(value: Any) -> Any:
    if not topology().enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier() -> None:
    if topology().enabled:
        dist.barrier()


# --- checkpoints ----------------------------------------------------------------------------------------------------
def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole student state on rank 0's CPU (empty elsewhere). A collective: every rank calls it."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    save_model: Any,
    training_state: dict[str, Any],
    keep: int,
) -> tuple[Path, dict[str, Any]]:
    """checkpoint.save for a sharded student: DCP from every rank, then the HF copy, state and manifest by rank 0.

    Every rank calls it; the folder is local disk shared by the node's ranks. Returns rank 0's manifest (others:
    an empty dict)."""
    final = checkpoint.checkpoint_dir(root, step)
    staging = root / f".tmp-{final.name}"
    main = topology().is_main
    if main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=staging / SHARDED_STATE)
    save_model(staging)  # gathers on every rank, writes on rank 0
    manifest: dict[str, Any] = {}
    if main:
        torch.save(training_state, staging / checkpoint.TRAINING_STATE)
        manifest = checkpoint.write_manifest(staging, step)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        checkpoint.prune(root, keep)
    barrier()
    return final, manifest


def is_sharded(folder: Path) -> bool:
    return (folder / SHARDED_STATE).is_dir()


def load_sharded(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Model and optimiser from a DCP checkpoint written on any number of ranks (resharded to this one)."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    with warnings.catch_warnings():  # one process reading a sharded checkpoint is intended (resume on 1 GPU)
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
        dcp.load(state, checkpoint_id=folder / SHARDED_STATE, no_dist=not topology().enabled)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def load_unsharded(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, optimizer_state: dict[str, Any]
) -> None:
    """A single-process checkpoint (HF weights + a plain optimiser state_dict) into a sharded student."""
    saved = type(model).from_pretrained(folder, use_safetensors=True, trust_remote_code=False)
    full = saved.state_dict()
    del saved
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, full, options=options)
    # The plain state_dict names parameters by their index in the param groups; the groups are built the same
    # way in both runs, so index i is the i-th parameter of this optimiser's groups. DCP wants names.
    names = {id(p): name for name, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    by_name = {
        "state": {order[i]: value for i, value in optimizer_state["state"].items()},
        "param_groups": [
            {**group, "params": [order[i] for i in group["params"]]} for group in optimizer_state["param_groups"]
        ],
    }
    set_optimizer_state_dict(model, optimizer, by_name, options=options)


# --- the training child under torchrun --------------------------------------------------------------------------------
class EventLog:
    """Rank 0's TrainingCallback: the worker.child messages as JSON lines, and the stop file as should_stop."""

    def __init__(self, output_dir: Path, total: int) -> None:
        self.path, self.stop_file, self.total = output_dir / EVENTS, output_dir / STOP_FILE, total

    def write(self, message: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(message, default=str) + "\n")

    def on_train_begin(self, recipe: Any) -> None:
        self.write({"type": "train_begin", "step": recipe.step, "total": self.total})

    def on_step(self, record: dict[str, Any]) -> None:
        self.write({"type": "step", "record": record})

    def on_checkpoint(self, step: int, folder: Path, manifest: dict[str, Any]) -> None:
        self.write({"type": "checkpoint", "step": step, "folder": str(folder)})

    def should_stop(self) -> bool:
        return self.stop_file.exists()

    def on_train_end(self, result: Any) -> None:
        if not result.stopped_early:
            self.write({"type": "evaluating"})


def run(spec: Any, output_dir: Path, *, resume: bool, progress: bool = False) -> dict[str, Any]:
    """One job on this process group: validate, score before (rank 0), train sharded, score after (rank 0)."""
    from lingudistill import pipeline
    from lingudistill.models.loading import load_student
    from lingudistill.recipe import MetricsFile, Recipe

    main = topology().is_main
    checked = pipeline.validate(spec)
    callbacks: list[Any] = []
    scores_before: dict[str, Any] = {}
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "spec.json").write_text(spec.model_dump_json(indent=2))
        events = EventLog(output_dir, spec.training.max_steps)
        events.write({"type": "validated"})
        callbacks = [MetricsFile(output_dir / "metrics.jsonl"), events]
        scores_before = pipeline.score_before(spec, checked, output_dir, progress)
    teacher, checked.teacher = checked.teacher, None  # the recipe loads its own (bf16, on this rank's device)
    del teacher
    recipe = Recipe(spec, output_dir, callbacks=callbacks, progress=progress and main, student=checked.student)
    result = recipe.train(resume=resume)
    done = {
        "type": "done",
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "model_dir": str(result.model_dir),
        "report": None,
    }
    del recipe
    # Every rank's last collective (the gather of the final model) must be complete on both ends before a rank
    # leaves: gloo aborts the process ("terminate called without an active exception") when a rank tears its
    # process group down while a send of that collective is still in flight to rank 0.
    barrier()
    if not main:
        return done
    if not result.stopped_early and pipeline.has_suites(spec):
        # The trained student, whole, from the folder just written: evaluation needs no other rank.
        student = load_student(str(result.model_dir))
        done["report"] = pipeline.report_after(spec, student, checked, scores_before, output_dir, progress)
    events.write(done)
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lingudistill.distributed", description=__doc__.split("\n")[0])
    parser.add_argument("spec", help="Job spec (YAML or JSON).")
    parser.add_argument("--output", "-o", required=True, type=Path, help="Output folder, shared by the node's ranks.")
    parser.add_argument("--resume", action="store_true", help="Continue from the newest complete checkpoint.")
    args = parser.parse_args(argv)
    from lingudistill.spec import load_spec

    topo = init_process_group()
    try:
        # rank 0 resolves the spec, so a generated seed is the same on every rank
        spec = broadcast_object(load_spec(args.spec).resolved() if topo.is_main else None)
        run(spec, args.output, resume=args.resume, progress=topo.is_main and sys.stderr.isatty())
    except BaseException as exc:
        if topo.is_main:
            args.output.mkdir(parents=True, exist_ok=True)
            EventLog(args.output, 0).write({"type": "error", "error": type(exc).__name__, "message": str(exc)})
        raise
    finally:
        # Free the sharded student (its DTensors and hooks hold the process group) while the interpreter is whole,
        # then tear the group down: left to interpreter shutdown, gloo's threads can abort the process.
        gc.collect()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main()  # an error raises out of here: Python prints it and exits 1 the usual way
    # Success: every output is written and the process group is gone. Skip interpreter finalisation, where gloo's
    # and torch's C++ threads are torn down in no fixed order and can abort a finished rank (SIGABRT), which
    # torchrun would report as a failed job.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
