"""Step time and peak memory of a LinguDistill step against a plain CE (SFT) step, same student and batch.

    python bench/train_step.py                 # small CPU config
    python bench/train_step.py --preset qwen2vl-2b --device cuda   # Qwen2-VL-2B-shaped, random weights, bf16

Each mode runs in a fresh subprocess, so peak memory (CUDA max allocated, or the process's max RSS on CPU) is
that mode's alone. Goals (issue 2), with P the prompt and R the response length:
    step-time ratio   <= 1 + R / (3 (P + R)) + 0.05     (the teacher only reads the response, forward only)
    memory excess     <= teacher weights + 10% of the SFT peak
"""

from __future__ import annotations

import argparse
import json
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
}


def build(folder: Path, preset: dict) -> tuple[Path, Path, Path]:
    """Student, teacher (a copy of the decoder: the teacher's cost is what is measured) and a data file."""
    words = tuple(f"w{i}" for i in range(preset["vocab"] - 64))
    overrides = {**preset["text"], "initializer_range": 0.02}
    if preset["family"] == "llava":
        from lingudistill.tiny.llava import build_llava

        student, teacher = build_llava(folder, words=words, text_overrides=overrides)
    else:
        from lingudistill.tiny.qwen_vl import build_qwen_vl  # type: ignore[attr-defined]

        student, teacher = build_qwen_vl(folder, family=preset["family"], words=words, text_overrides=overrides)
    Image.new("RGB", (32, 32), "red").save(folder / "image.png")
    record = {
        "prompt": " ".join(words[i % len(words)] for i in range(preset["prompt_words"])),
        "response": " ".join(words[(7 * i) % len(words)] for i in range(preset["response_words"])),
        "images": ["image.png"],
    }
    data = folder / "data.jsonl"
    data.write_text(json.dumps(record) + "\n")
    return student, teacher, data


def run_mode(folder: Path, mode: str, preset_name: str, device: str, steps: int) -> dict:
    """One mode in this process: returns median step time and peak memory."""
    import os

    os.environ["LINGUDISTILL_DEVICE"] = device
    from lingudistill.recipe import Recipe
    from lingudistill.spec import JobSpec

    preset = PRESETS[preset_name]
    spec = JobSpec.model_validate(
        {
            "name": "bench",
            "student": str(folder / "student"),
            "teacher": str(folder / "teacher"),
            "mixture": [{"name": "text", "uri": str(folder / "data.jsonl"), "distill": True}],
            "method": {"kd_sources": "selective" if mode == "distill" else "none"},
            "training": {
                "max_steps": steps,
                "batch_size": preset["batch_size"],
                "grad_accum": 1,
                "seed": 0,
                "max_seq_len": 16384,
                "checkpoint_every": 10**6,
            },
        }
    )
    recipe = Recipe(spec, folder / f"out-{mode}")
    teacher_bytes = 0
    if recipe.teacher is not None:
        teacher_bytes = sum(p.numel() * p.element_size() for p in recipe.teacher.model.parameters())
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        record = recipe.train_step()
        times.append(record["step_time_s"])
    batch = recipe._micro_batches()[0]
    prompt = batch["prompt_length"]
    length = batch["input_ids"].shape[1]
    flops_per_token = 6 * sum(p.numel() for p in recipe.student.model.parameters())
    return {
        "mode": mode,
        "median_step_s": statistics.median(times[2:] if len(times) > 4 else times),
        "peak_mb": record["peak_memory_mb"],
        "teacher_mb": teacher_bytes / 2**20,
        "P": prompt,
        "R": length - prompt,
        "tokens_per_step": int(batch["attention_mask"].sum()),
        "train_flops_per_step": flops_per_token * int(batch["attention_mask"].sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak for MFU (H100 SXM)")
    parser.add_argument("--_mode", help=argparse.SUPPRESS)
    parser.add_argument("--_folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._mode:
        print(json.dumps(run_mode(Path(args._folder), args._mode, args.preset, args.device, args.steps)))
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-train-step-"))
    build(folder, PRESETS[args.preset])
    results = {mode: _in_subprocess(args, folder, mode) for mode in ("sft", "distill")}
    report(results, args)


def _in_subprocess(args: argparse.Namespace, folder: Path, mode: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--preset",
        args.preset,
        "--device",
        args.device,
        "--steps",
        str(args.steps),
        "--_mode",
        mode,
        "--_folder",
        str(folder),
    ]
    started = time.perf_counter()
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - started
    return result


def report(results: dict, args: argparse.Namespace) -> None:
    sft, distill = results["sft"], results["distill"]
    p, r = distill["P"], distill["R"]
    time_ratio = distill["median_step_s"] / sft["median_step_s"]
    time_goal = 1 + r / (3 * (p + r)) + 0.05
    excess = distill["peak_mb"] - sft["peak_mb"]
    memory_goal = distill["teacher_mb"] + 0.10 * sft["peak_mb"]
    print(f"preset {args.preset} on {args.device}: P={p} R={r} tokens/step={distill['tokens_per_step']}")
    for row in (sft, distill):
        print(f"  {row['mode']:8s} median step {row['median_step_s'] * 1000:9.1f} ms   peak {row['peak_mb']:9.1f} MB")
    print(
        f"step-time ratio {time_ratio:.3f} (goal <= {time_goal:.3f}): {'PASS' if time_ratio <= time_goal else 'MISS'}"
    )
    print(
        f"memory excess {excess:.1f} MB (goal <= teacher {distill['teacher_mb']:.1f} MB + 10% SFT = "
        f"{memory_goal:.1f} MB): {'PASS' if excess <= memory_goal else 'MISS'}"
    )
    if args.device.startswith("cuda"):
        for row in (sft, distill):
            mfu = row["train_flops_per_step"] / row["median_step_s"] / (args.peak_tflops * 1e12)
            print(f"  {row['mode']:8s} MFU {100 * mfu:.1f}% (student 6ND over peak {args.peak_tflops} TFLOP/s)")


if __name__ == "__main__":
    main()
