"""Collectives, FSDP2 sharding and sharded checkpoints: what the recipe needs to train on several ranks.

Every helper is also correct in a plain single process (no process group): collectives return their input, and
`topology()` says rank 0 of 1. How a multi-GPU job is laid out (sharding groups, replicated teacher, data slices,
summed gradients, DCP checkpoints) is described in lingudistill.distributed, which starts one.
"""

from __future__ import annotations

import os
import shutil
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
    # Evaluation during training runs on every rank in lockstep (each forward is a collective); HF's generate then
    # keeps finished ranks stepping until all are done (synced_gpus), which it decides from this attribute.
    model._is_fsdp_managed_module = True
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

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:  # evaluation applies the head as a module
        bias = getattr(self.module, "bias", None)
        return torch.nn.functional.linear(hidden, self.weight, gathered_weight(bias) if bias is not None else None)


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


def all_gather_object(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if not topology().enabled:
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


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
