"""A tiny job on disk: tiny LLaVA student and its teacher, a text source and an image source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from lingudistill.tiny.llava import build_llava
from tests.engine.identity import TinyFamilies

COLOURS = ("red", "green", "blue", "yellow")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_tiny_data(folder: Path) -> None:
    data = folder / "data"
    (data / "images").mkdir(parents=True, exist_ok=True)
    with (data / "text.jsonl").open("w") as handle:
        for a in range(4):
            for b in range(4):
                record = {"prompt": f"what is {NUMBERS[a]} plus {NUMBERS[b]} ?", "response": f"{NUMBERS[a + b]} ."}
                handle.write(json.dumps(record) + "\n")
    with (data / "vqa.jsonl").open("w") as handle:
        for i, colour in enumerate(COLOURS * 3):
            Image.new("RGB", (32, 32), colour).save(data / "images" / f"{i}.png")
            record = {
                "prompt": "what colour is the square ?",
                "response": f"the square is {colour} .",
                "images": [f"images/{i}.png"],
            }
            handle.write(json.dumps(record) + "\n")


def tiny_spec(folder: Path, **training) -> dict:
    return {
        "name": "tiny-job",
        "student": "student",
        "teacher": "teacher",
        "mixture": [
            {"name": "text", "uri": "data/text.jsonl", "weight": 1.0, "distill": True},
            {"name": "vqa", "uri": "data/vqa.jsonl", "weight": 1.0, "distill": False},
        ],
        "method": {"kv_sharing": "prompt", "kd_sources": "selective", "loss_chunk_size": 16},
        "training": {
            "max_steps": 6,
            "batch_size": 2,
            "grad_accum": 2,
            "lr": 1e-3,
            "lr_projector": 1e-3,
            "warmup_ratio": 0.0,
            "seed": 7,
            "checkpoint_every": 3,
            "max_seq_len": 128,
            **training,
        },
    }


@pytest.fixture
def tiny_job(tmp_path: Path) -> Path:
    """A folder with student/, teacher/, data/ and spec.yaml; returns the spec path.

    The teacher is an independent random LM (not the student's copy), so KD is large and training lowers it.
    """
    build_llava(tmp_path, teacher_matches_student=False)
    write_tiny_data(tmp_path)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(tmp_path)))
    return tmp_path / "spec.yaml"


@pytest.fixture(scope="session")
def tiny_families(tmp_path_factory) -> TinyFamilies:
    """Every tiny family of tests/engine/identity.py's FAMILIES, each built and loaded once per session."""
    return TinyFamilies(tmp_path_factory)
