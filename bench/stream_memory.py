"""Peak memory of the training data path for 10k against 1M records, and exact resume on the large source.

    python bench/stream_memory.py                       # 10k and 1M records, 200 steps of 8
    python bench/stream_memory.py --eager 10000 100000  # also the eager loader at these sizes (the baseline)

Issue 17: "Peak memory for 1M records is within 10% of that for 10k records." Each measurement is one fresh
process that does what training does with its data and nothing else: `load_sources` on a mixture of the large
source and a small fixed one (weights 0.8 and 0.2), a `MixtureSampler`, then `--steps` steps of `--batch` records,
each read (parsed and validated) and its text touched. No model runs: the model's memory does not depend on the
dataset's size, and leaving it out makes the data path's share as large as it can be. Peak memory is the process's
high-water RSS, VmHWM in /proc/self/status, read before it exits. Not getrusage's ru_maxrss: Linux carries the
pre-exec memory into it, and subprocess starts the child with vfork, so every child reported the driver's 45 MB.

The same two measurements are repeated in a process that first imports what the trainer imports (torch,
transformers; no model is built), the floor under which no training process runs.

The baseline, measured in the same run: the eager loader that held every record (`list(read_source(...))`, what
`load_sources` did before issue 17) with the same sampler, at the sizes given by --eager (1M records of this text
take several GB on a shared machine, so the default stops at 100k and the bench prints bytes per record).

Exact resume: a process draws K steps and saves the sampler's state; a fresh process loads it and draws M more;
they must equal steps K+1..K+M of an uninterrupted process.

The records are chat-form text records of realistic length, ShareGPT-like: a prompt of 20 to 200 words and a
response of 50 to 400 words (about 2.3 kB a line). They are written once into a temporary folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lingudistill.data.mixture import MixtureSampler  # noqa: E402
from lingudistill.data.sources import load_sources, read_source  # noqa: E402
from lingudistill.spec import MixtureSource  # noqa: E402

GOAL = 1.10
SMALL_SOURCE_RECORDS = 1000
WEIGHTS = {"large": 0.8, "small": 0.2}
_WORDS = (
    "the model image answer question token layer vision language student teacher cache prompt response data "
    "train step loss gradient batch sample record source mixture weight epoch order index memory stream text "
    "picture colour shape object scene count left right above below because therefore however which where when"
).split()


def write_source(path: Path, count: int, seed: int) -> None:
    """`count` chat records, drawn from 4096 prepared texts so that writing 1M of them takes seconds."""
    rng = random.Random(seed)
    prompts = [" ".join(rng.choices(_WORDS, k=rng.randint(20, 200))) for _ in range(4096)]
    responses = [" ".join(rng.choices(_WORDS, k=rng.randint(50, 400))) for _ in range(4096)]
    with path.open("w") as out:
        for i in range(count):
            record = {
                "messages": [
                    {"role": "user", "content": f"{i}. {prompts[(i * 7919) % 4096]}"},
                    {"role": "assistant", "content": responses[(i * 104729) % 4096]},
                ]
            }
            out.write(json.dumps(record) + "\n")


# --- one measurement, in its own process ---------------------------------------------------------------------------


def mixture(folder: Path, large: int) -> list[MixtureSource]:
    return [
        MixtureSource(name="large", uri=str(folder / f"{large}.jsonl"), weight=WEIGHTS["large"]),
        MixtureSource(name="small", uri=str(folder / f"{SMALL_SOURCE_RECORDS}.jsonl"), weight=WEIGHTS["small"]),
    ]


def measure(args: argparse.Namespace) -> dict:
    """Load, sample and read `skip + steps` steps; hash the records of the last `steps`."""
    folder, large, loader, batch = Path(args._folder), args._large, args._loader, args.batch
    if args.trainer:
        import lingudistill.recipe  # noqa: F401 - what a training process has loaded before its data: torch, transformers
    started = time.perf_counter()
    specs = mixture(folder, large)
    eager = loader == "eager"  # the baseline: every record in memory, as load_sources held them before issue 17
    sources = {spec.name: list(read_source(spec)) for spec in specs} if eager else load_sources(specs)
    loaded = time.perf_counter()
    sampler = MixtureSampler(sources, WEIGHTS, seed=17)  # type: ignore[arg-type]
    if args.state_in:
        sampler.load_state_dict(json.loads(Path(args.state_in).read_text()))
    shuffled = time.perf_counter()
    digest, characters = hashlib.sha256(), 0
    for draw in range((args.skip + args.steps) * batch):
        record = sampler.next()
        text = "".join(part["text"] for message in record.messages for part in message["content"])
        characters += len(text)
        if draw >= args.skip * batch:
            digest.update(f"{record.origin}\0{text}\0".encode())
    finished = time.perf_counter()
    if args.state_out:
        Path(args.state_out).write_text(json.dumps(sampler.state_dict()))
    return {
        "large": large,
        "loader": loader,
        "peak_rss_mb": peak_rss_mb(),
        "load_s": loaded - started,
        "shuffle_s": shuffled - loaded,
        "read_s": finished - shuffled,
        "records_read": (args.skip + args.steps) * batch,
        "characters_read": characters,
        "digest": digest.hexdigest(),
        "held_bytes_per_record": held_bytes_per_record(sources, sampler) if loader == "indexed" else None,
    }


def peak_rss_mb() -> float:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(status["VmHWM"].split()[0]) / 1024  # "12345 kB"


def held_bytes_per_record(sources: dict, sampler: MixtureSampler) -> float:
    """The index and the permutation of the large source, per record."""
    large = sources["large"]
    index = sum(len(f.block_offsets) * 8 + len(f.block_lines) * 8 for f in large.files)
    order = sampler._order["large"]
    return (index + len(order) * order.itemsize) / len(large)


# --- the driver ------------------------------------------------------------------------------------------------------


def child(args: argparse.Namespace, large: int, loader: str, steps: int, **extra: str | int) -> dict:
    """One measurement in a fresh process. `extra`: trainer (1: load what the trainer imports first), skip (steps
    drawn first, not hashed), state_in, state_out."""
    command = [sys.executable, __file__, "--_child", "--_folder", str(args._folder), "--_large", str(large)]
    command += ["--_loader", loader, "--steps", str(steps), "--batch", str(args.batch)]
    command += [f"--_{key.replace('_', '-')}={value}" for key, value in extra.items()]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[10_000, 1_000_000], help="small and large source")
    parser.add_argument("--eager", type=int, nargs="*", default=[10_000, 100_000], help="sizes for the baseline")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--resume-after", type=int, default=120, help="K: steps before the state is saved")
    parser.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_folder", help=argparse.SUPPRESS)
    parser.add_argument("--_large", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_loader", help=argparse.SUPPRESS)
    parser.add_argument("--_trainer", dest="trainer", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--_skip", dest="skip", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--_state-in", dest="state_in", default="", help=argparse.SUPPRESS)
    parser.add_argument("--_state-out", dest="state_out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        print(json.dumps(measure(args)))
        return
    args._folder = Path(tempfile.mkdtemp(prefix="bench-stream-memory-"))
    try:
        run(args)
    finally:
        shutil.rmtree(args._folder)


def run(args: argparse.Namespace) -> None:
    folder: Path = args._folder
    for size in sorted({SMALL_SOURCE_RECORDS, *args.sizes, *args.eager}):
        started = time.perf_counter()
        write_source(folder / f"{size}.jsonl", size, seed=size)
        megabytes = (folder / f"{size}.jsonl").stat().st_size / 2**20
        print(f"wrote {size} records ({megabytes:.0f} MB) in {time.perf_counter() - started:.1f} s", flush=True)
    small, large = args.sizes
    indexed = {size: child(args, size, "indexed", args.steps) for size in (small, large)}
    eager = {size: child(args, size, "eager", args.steps) for size in args.eager}
    print_memory(indexed, eager, small, large)
    in_trainer = {size: child(args, size, "indexed", args.steps, trainer=1) for size in (small, large)}
    ratio = in_trainer[large]["peak_rss_mb"] / in_trainer[small]["peak_rss_mb"]
    print(
        f"indexed, in a process that first imports lingudistill.recipe (torch, transformers; no weights): "
        f"{in_trainer[small]['peak_rss_mb']:.1f} MB and {in_trainer[large]['peak_rss_mb']:.1f} MB, ratio {ratio:.3f}"
    )
    print_resume(args, large)


def print_memory(indexed: dict, eager: dict, small: int, large: int) -> None:
    print("\nloader   records    peak RSS   load+index   shuffle   read    held bytes/record (index + order)")
    for result in [*indexed.values(), *eager.values()]:
        held = result["held_bytes_per_record"]
        print(
            f"{result['loader']:8} {result['large']:>9}  {result['peak_rss_mb']:7.1f} MB  {result['load_s']:8.2f} s"
            f"  {result['shuffle_s']:6.2f} s  {result['read_s']:5.2f} s   {'' if held is None else f'{held:.2f}'}"
        )
    ratio = indexed[large]["peak_rss_mb"] / indexed[small]["peak_rss_mb"]
    verdict = "met" if ratio <= GOAL else "missed"
    print(f"\nindexed: peak RSS {large} / {small} records = {ratio:.3f} (goal <= {GOAL}: {verdict})")
    sizes = sorted(eager)
    if len(sizes) >= 2:
        low, high = eager[sizes[0]], eager[sizes[-1]]
        per_record = (high["peak_rss_mb"] - low["peak_rss_mb"]) * 2**20 / (sizes[-1] - sizes[0])
        growth = high["peak_rss_mb"] / low["peak_rss_mb"]
        print(
            f"eager (baseline): peak RSS {sizes[-1]} / {sizes[0]} records = {growth:.3f}, {per_record:.0f} B a record"
        )


def print_resume(args: argparse.Namespace, large: int) -> None:
    after, more = args.resume_after, args.steps - args.resume_after
    state = str(args._folder / "sampler-state.json")
    uninterrupted = child(args, large, "indexed", more, skip=after)
    child(args, large, "indexed", after, state_out=state)
    resumed = child(args, large, "indexed", more, state_in=state)
    exact = resumed["digest"] == uninterrupted["digest"]
    print(
        f"\nresume: {after} steps, state saved, {more} more in a fresh process: "
        f"{'identical to' if exact else 'DIFFERENT from'} steps {after + 1}..{args.steps} of an uninterrupted run"
        f" (each record's origin and text hashed: {resumed['digest'][:16]} / {uninterrupted['digest'][:16]})"
    )


if __name__ == "__main__":
    main()
