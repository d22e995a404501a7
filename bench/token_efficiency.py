"""Token efficiency (real tokens / computed tokens) of the mixture sampler: plain, grouped within each optimiser step
(`group_by_length: step`, the default) and grouped within pools across steps (`pool`).

    python bench/token_efficiency.py [--micro-batches 1024] [--batch-sizes 4 8 16] [--grad-accums 1 4 8 16] [--seed 0]

`collate` left-pads every prompt to the micro-batch's longest prompt and right-pads every response to its longest
response, so a micro-batch of B records computes B (max P + max R) tokens for sum(P + R) real ones. This bench
draws optimiser steps of grad_accum micro-batches from the real samplers (lingudistill.data.mixture), regroups them
with the recipe's own `group_within_step` (lingudistill.data.grouping) where the mode says so, batches them with the
real `collate`, and counts attention-mask ones (real) against the padded tensor's size (computed). No model runs:
token counts are fixed by the lengths alone, so the figure does not depend on the machine's load.

The length mix below stands for a LinguDistill job on LLaVA-style instruction data. Where each number comes from:
- Image tokens per image. LLaVA-1.5 (CLIP ViT-L/14 at 336 px): (336/14)^2 = 576. LLaVA-NeXT "AnyRes" adds a grid of
  336 px tiles to the base view: 1 + 2 tiles = 1728 or 1 + 4 tiles = 2880 tokens. SigLIP-so400m at 384 px
  (LLaVA-OneVision, PaliGemma-style) gives 27^2 = 729 per tile. Scenario `llava-1.5` uses 576 throughout;
  `anyres` draws 576, 1728 or 2880 uniformly, standing for images of different shapes.
- Sources and weights follow the kinds in LLaVA-1.5's mix665k: short-answer VQA (VQAv2, GQA, OCR-VQA, about 40%
  of the records, answers of a word or phrase: 5 to 12 tokens with the chat template's end-of-turn tokens),
  open-ended instructions (LLaVA-Instruct-158K: conversation, detailed description, reasoning), and text-only
  conversations (ShareGPT; in LinguDistill the distilled, language-intensive source).
- Response lengths 5 to 400 tokens (the range issue 16 names). The log-normal shapes inside that range are our
  assumption, not measured on the datasets: medians of about 110 tokens (instructions) and 150 (text-only).
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lingudistill.data.grouping import group_within_step  # noqa: E402
from lingudistill.data.mixture import LengthGroupedSampler, MixtureSampler  # noqa: E402
from lingudistill.data.records import Record  # noqa: E402
from lingudistill.models.encoding import IGNORE, Example, collate  # noqa: E402
from lingudistill.models.families.base import FamilyAdapter  # noqa: E402

IMAGE_TOKENS = {"llava-1.5": (576,), "anyres": (576, 1728, 2880)}
WEIGHTS = {"vqa_short": 0.40, "instruct": 0.35, "text": 0.25}
RECORDS_PER_SOURCE = 5000
GOAL = 0.90


def clipped_lognormal(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return min(high, max(low, round(rng.lognormvariate(math.log(median), sigma))))


def source_lengths(name: str, image_tokens: tuple[int, ...], rng: random.Random) -> tuple[int, int]:
    """(prompt tokens, response tokens) of one record of a source; prompts include the image tokens."""
    if name == "vqa_short":
        return rng.choice(image_tokens) + rng.randint(10, 40), rng.randint(5, 12)
    if name == "instruct":
        return rng.choice(image_tokens) + rng.randint(15, 60), clipped_lognormal(rng, 110, 0.7, 5, 400)
    return clipped_lognormal(rng, 90, 0.9, 20, 600), clipped_lognormal(rng, 150, 0.6, 50, 400)


def build_mixture(scenario: str, seed: int) -> tuple[dict[str, list[Record]], dict[str, tuple[int, int]]]:
    """Records that carry only an origin, and each origin's (P, R)."""
    rng = random.Random(seed)
    records: dict[str, list[Record]] = {}
    lengths: dict[str, tuple[int, int]] = {}
    for name in WEIGHTS:
        records[name] = []
        for i in range(RECORDS_PER_SOURCE):
            origin = f"{name}.jsonl:{i + 1}"
            records[name].append(Record(messages=[], images=(), source=name, origin=origin))
            lengths[origin] = source_lengths(name, IMAGE_TOKENS[scenario], rng)
    return records, lengths


def as_example(prompt: int, response: int) -> Example:
    labels = torch.full((prompt + response,), IGNORE)
    labels[prompt:] = 1
    token_types = torch.zeros(prompt + response, dtype=torch.long)
    return Example(torch.ones(prompt + response, dtype=torch.long), labels, token_types)


def plain_steps(records: dict, lengths: dict, batch: int, accum: int, seed: int) -> Iterator[list[list[Record]]]:
    """Optimiser steps of `accum` micro-batches as the mixture draws them (group_by_length: off)."""
    sampler = MixtureSampler(records, WEIGHTS, seed=seed)
    while True:
        yield cut([sampler.next() for _ in range(accum * batch)], batch)


def step_grouped_steps(records: dict, lengths: dict, batch: int, accum: int, seed: int) -> Iterator[list[list[Record]]]:
    """The same draws, each step re-partitioned by length (group_by_length: step), as the recipe does."""
    for step in plain_steps(records, lengths, batch, accum, seed):
        drawn = [record for micro_batch in step for record in micro_batch]
        order = group_within_step([lengths[record.origin] for record in drawn], batch)
        yield cut([drawn[i] for i in order], batch)


def pool_grouped_steps(records: dict, lengths: dict, batch: int, accum: int, seed: int) -> Iterator[list[list[Record]]]:
    """Draws regrouped within pools of 64 micro-batches across steps (group_by_length: pool)."""
    mixture = MixtureSampler(records, WEIGHTS, seed=seed)
    sampler = LengthGroupedSampler(mixture, batch, lambda record: lengths[record.origin])
    while True:
        yield cut([sampler.next() for _ in range(accum * batch)], batch)


MODES = {"plain": plain_steps, "step": step_grouped_steps, "pool": pool_grouped_steps}


def cut(records: list[Record], batch: int) -> list[list[Record]]:
    return [records[start : start + batch] for start in range(0, len(records), batch)]


def measure_steps(steps: Iterator[list[list[Record]]], lengths: dict, count: int) -> dict:
    """Over `count` optimiser steps, their micro-batches batched by the engine's collate:
    efficiency   real tokens / computed tokens;
    kd_steps     the share of steps holding a distilled (`text`) record, the only steps whose KD term is not 0;
    ce_share     each source's share of the CE gradient: the loss is a mean over the step's response tokens
                 (METHOD.md), so a token weighs 1 / (response tokens in its step)."""
    real = computed = kd_steps = 0
    ce_mass = dict.fromkeys(WEIGHTS, 0.0)
    adapter = FamilyAdapter()
    for step in itertools.islice(steps, count):
        for drawn in step:
            examples = [as_example(*lengths[r.origin]) for r in drawn]
            mask = collate(examples, adapter, pad_token_id=0)["attention_mask"]
            real += int(mask.sum())
            computed += mask.numel()
        records = [record for micro_batch in step for record in micro_batch]
        kd_steps += any(r.source == "text" for r in records)
        responses = sum(lengths[r.origin][1] for r in records)
        for record in records:
            ce_mass[record.source] += lengths[record.origin][1] / responses
    return {
        "efficiency": real / computed,
        "kd_steps": kd_steps / count,
        "ce_share": {name: mass / count for name, mass in ce_mass.items()},
    }


def measure(scenario: str, batch: int, accum: int, micro_batches: int, seed: int) -> dict[str, dict]:
    records, lengths = build_mixture(scenario, seed)
    return {
        mode: measure_steps(steps(records, lengths, batch, accum, seed), lengths, micro_batches // accum)
        for mode, steps in MODES.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--micro-batches", type=int, default=1024, help="micro-batches per figure (16 pools of 64)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--grad-accums", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"token efficiency = real / computed tokens over {args.micro_batches} micro-batches, goal >= {GOAL}")
    print("KD steps = share of optimiser steps with a distilled record; CE vqa = short-answer VQA's share of the")
    print("CE gradient; each as plain/step/pool")
    print(
        f"{'scenario':10s} {'batch':>5s} {'accum':>5s} {'plain':>6s} {'step':>6s} {'pool':>6s}  step goal  "
        f"{'KD steps':>14s}  {'CE vqa':>14s}"
    )
    for scenario in IMAGE_TOKENS:
        for batch in args.batch_sizes:
            for accum in args.grad_accums:
                figures = measure(scenario, batch, accum, args.micro_batches, args.seed)
                efficiency = {mode: figures[mode]["efficiency"] for mode in MODES}
                kd = "/".join(f"{figures[mode]['kd_steps']:.2f}" for mode in MODES)
                ce = "/".join(f"{figures[mode]['ce_share']['vqa_short']:.2f}" for mode in MODES)
                print(
                    f"{scenario:10s} {batch:5d} {accum:5d} {efficiency['plain']:6.3f} {efficiency['step']:6.3f} "
                    f"{efficiency['pool']:6.3f}  {verdict(efficiency['step']):>9s}  {kd:>14s}  {ce:>14s}"
                )


def verdict(efficiency: float) -> str:
    return "PASS" if efficiency >= GOAL else "MISS"


if __name__ == "__main__":
    main()
