"""How a multi-GPU job is launched and steered, without importing torch (the worker's Celery process uses it).

`python -m torch.distributed.run` is torchrun, with the interpreter that runs the worker (no PATH lookup).
--standalone picks a free rendezvous port, so several jobs may share a node on disjoint GPUs (CUDA_VISIBLE_DEVICES
decides which). Under the worker (--supervision) rank 0 writes OUTPUT/events.jsonl, and OUTPUT/STOP asks every
rank to stop after the current step (lingudistill.events).
"""

from __future__ import annotations

import sys
from pathlib import Path


def launch_command(
    spec_path: str | Path,
    output_dir: str | Path,
    nproc: int,
    resume: bool,
    *,
    python: str | None = None,
    origin: str | Path | None = None,
    supervision: str | Path | None = None,
) -> list[str]:
    """The argv that runs one job on `nproc` GPUs of this node (the worker spawns it as the training child)."""
    command = [python or sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    command += ["-m", "lingudistill.distributed", str(spec_path), "--output", str(output_dir)]
    command += ["--resume"] if resume else []
    command += ["--origin", str(origin)] if origin is not None else []
    return [*command, "--supervision", str(supervision)] if supervision is not None else command
