"""Multi-GPU jobs on one node: torchrun, an FSDP2-sharded student, and checkpoints resumable on any GPU count.

`resources.gpus: N` runs the training child as

    python -m torch.distributed.run --standalone --nproc-per-node N -m lingudistill.distributed SPEC --output DIR
        [--resume] [--origin SPEC] [--supervision FILE]

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
- Every rank runs `pipeline.run_job`, the one orchestration: rank 0 alone scores the input models, runs the
  callbacks (metrics.jsonl, and under the worker events.jsonl), writes the model and the report; evaluation during
  training runs on every rank in lockstep. The collectives and sharded checkpoints are in lingudistill.parallel.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch.distributed as dist

from lingudistill import parallel, pipeline
from lingudistill.events import EventSink, FileSink, NoSink, Supervision, failed_event
from lingudistill.launch import launch_command  # noqa: F401 - re-exported: the command that starts this module
from lingudistill.spec import load_spec


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lingudistill.distributed", description=__doc__.split("\n")[0])
    parser.add_argument("spec", help="Job spec (YAML or JSON).")
    parser.add_argument("--output", "-o", required=True, type=Path, help="Output folder, shared by the node's ranks.")
    parser.add_argument("--resume", action="store_true", help="Continue from the newest complete checkpoint.")
    parser.add_argument("--origin", help="The spec as submitted, for the report's provenance (the worker's).")
    parser.add_argument("--supervision", type=Path, help="Run under the worker's supervisor (lingudistill.events).")
    args = parser.parse_args(argv)
    topo = parallel.init_process_group()
    supervision = Supervision.from_json(args.supervision.read_text()) if args.supervision else None
    sink: EventSink = FileSink(supervision.events_file) if supervision and topo.is_main else NoSink()
    try:
        spec = load_spec(args.spec)
        if supervision is None:
            pipeline.run_job(spec, args.output, resume=args.resume, progress=topo.is_main and sys.stderr.isatty())
        else:
            origin = load_spec(args.origin) if args.origin else None
            pipeline.run_supervised(spec, supervision, sink, resume=args.resume, origin=origin)
    except BaseException as exc:
        sink.send(failed_event(exc))  # the supervisor adds every rank's output (ranks.log) as the traceback
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
