"""The mixture sampler: deterministic, weighted, epoch-complete, and resumable mid-epoch."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from lingudistill.data import mixture
from lingudistill.data.mixture import LengthGroupedSampler, MixtureSampler
from lingudistill.data.records import Record


def make_records(name: str, count: int) -> list[Record]:
    return [
        Record(
            messages=[{"role": "assistant", "content": [{"type": "text", "text": str(i)}]}],
            images=(),
            source=name,
            origin=f"{name}.jsonl:{i + 1}",
        )
        for i in range(count)
    ]


RECORDS = {"text": make_records("text", 13), "vqa": make_records("vqa", 7), "ocr": make_records("ocr", 29)}
WEIGHTS = {"text": 0.5, "vqa": 0.3, "ocr": 0.2}


def draw(sampler: MixtureSampler, count: int) -> list[str]:
    return [sampler.next().origin for _ in range(count)]


def test_the_same_seed_gives_the_same_stream() -> None:
    assert draw(MixtureSampler(RECORDS, WEIGHTS, seed=3), 500) == draw(MixtureSampler(RECORDS, WEIGHTS, seed=3), 500)
    assert draw(MixtureSampler(RECORDS, WEIGHTS, seed=3), 500) != draw(MixtureSampler(RECORDS, WEIGHTS, seed=4), 500)


def test_weights_are_respected_over_many_draws() -> None:
    sampler = MixtureSampler(RECORDS, WEIGHTS, seed=0)
    counts = Counter(sampler.next().source for _ in range(10_000))
    for name, weight in WEIGHTS.items():
        assert counts[name] / 10_000 == pytest.approx(weight, abs=0.02)


def test_weights_need_not_sum_to_one() -> None:
    sampler = MixtureSampler({"a": make_records("a", 5), "b": make_records("b", 5)}, {"a": 3.0, "b": 1.0}, seed=1)
    counts = Counter(sampler.next().source for _ in range(10_000))
    assert counts["a"] / 10_000 == pytest.approx(0.75, abs=0.02)


def test_every_record_is_seen_once_per_epoch_and_epochs_are_reshuffled() -> None:
    sampler = MixtureSampler(RECORDS, WEIGHTS, seed=7)
    per_source: dict[str, list[str]] = {name: [] for name in RECORDS}
    for _ in range(3_000):
        record = sampler.next()
        per_source[record.source].append(record.origin)
    for name, seen in per_source.items():
        size = len(RECORDS[name])
        epochs = [seen[start : start + size] for start in range(0, len(seen) - size + 1, size)]
        assert len(epochs) >= 3
        assert all(sorted(epoch) == sorted(r.origin for r in RECORDS[name]) for epoch in epochs)
        assert len({tuple(epoch) for epoch in epochs[:3]}) == 3  # reshuffled each epoch


@pytest.mark.parametrize("after", [0, 1, 37, 500])
def test_a_restored_sampler_continues_exactly(after: int, tmp_path: Path) -> None:
    original = MixtureSampler(RECORDS, WEIGHTS, seed=11)
    draw(original, after)
    torch.save(original.state_dict(), tmp_path / "sampler.pt")
    state = torch.load(tmp_path / "sampler.pt", weights_only=True)

    restored = MixtureSampler(RECORDS, WEIGHTS, seed=11)
    restored.load_state_dict(state)
    assert draw(restored, 1000) == draw(original, 1000)


def test_the_state_is_plain_json() -> None:
    sampler = MixtureSampler(RECORDS, WEIGHTS, seed=5)
    draw(sampler, 40)
    state = sampler.state_dict()
    restored = MixtureSampler(RECORDS, WEIGHTS, seed=5)
    restored.load_state_dict(json.loads(json.dumps(state)))
    assert draw(restored, 200) == draw(sampler, 200)


def test_a_state_from_another_mixture_is_refused() -> None:
    state = MixtureSampler(RECORDS, WEIGHTS, seed=5).state_dict()
    with pytest.raises(ValueError, match="seed 5"):
        MixtureSampler(RECORDS, WEIGHTS, seed=6).load_state_dict(state)
    grown = {**RECORDS, "vqa": make_records("vqa", 8)}
    with pytest.raises(ValueError, match="the mixture changed"):
        MixtureSampler(grown, WEIGHTS, seed=5).load_state_dict(state)


def test_the_sampler_is_an_iterator() -> None:
    sampler = MixtureSampler(RECORDS, WEIGHTS, seed=2)
    assert [next(sampler).origin for _ in range(5)] == draw(MixtureSampler(RECORDS, WEIGHTS, seed=2), 5)


@pytest.mark.parametrize(
    ("records", "weights", "message"),
    [
        ({}, {}, "no sources"),
        ({"a": make_records("a", 1)}, {"b": 1.0}, "different sources"),
        ({"a": []}, {"a": 1.0}, "without records: a"),
        ({"a": make_records("a", 1)}, {"a": 0.0}, "must be positive: a"),
    ],
)
def test_an_unusable_mixture_is_refused(records: dict, weights: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MixtureSampler(records, weights, seed=0)


# --- length-grouped batching -------------------------------------------------------------------------------------
MICRO_BATCH = 4


def lengths_by_origin(record: Record) -> tuple[int, int]:
    """A prompt and a response length that vary with the record, like images and answers of different sizes."""
    index = int(record.origin.rsplit(":", 1)[1])
    return 50 + (index * 37) % 700, 5 + (index * 53) % 400


def grouped(seed: int) -> LengthGroupedSampler:
    return LengthGroupedSampler(MixtureSampler(RECORDS, WEIGHTS, seed=seed), MICRO_BATCH, lengths_by_origin)


def padding_efficiency(records: list[Record]) -> float:
    """Real tokens / computed tokens when micro-batches pad prompts and responses to their longest."""
    real = computed = 0
    for start in range(0, len(records), MICRO_BATCH):
        pairs = [lengths_by_origin(record) for record in records[start : start + MICRO_BATCH]]
        real += sum(p + r for p, r in pairs)
        computed += len(pairs) * (max(p for p, _ in pairs) + max(r for _, r in pairs))
    return real / computed


def test_grouping_keeps_the_mixture_weights_over_many_draws() -> None:
    sampler = grouped(seed=0)
    counts = Counter(sampler.next().source for _ in range(10_000))
    for name, weight in WEIGHTS.items():
        assert counts[name] / 10_000 == pytest.approx(weight, abs=0.02)


def test_a_pool_holds_exactly_the_plain_samplers_draws_in_another_order() -> None:
    pool = mixture.POOL_MICRO_BATCHES * MICRO_BATCH
    plain = draw(MixtureSampler(RECORDS, WEIGHTS, seed=9), 2 * pool)
    regrouped = draw(grouped(seed=9), 2 * pool)
    assert regrouped != plain
    assert Counter(regrouped[:pool]) == Counter(plain[:pool])
    assert Counter(regrouped[pool:]) == Counter(plain[pool:])


def test_grouping_cuts_padding() -> None:
    sampler, plain = grouped(seed=4), MixtureSampler(RECORDS, WEIGHTS, seed=4)
    count = 4 * mixture.POOL_MICRO_BATCHES * MICRO_BATCH
    assert (
        padding_efficiency([sampler.next() for _ in range(count)])
        > padding_efficiency([plain.next() for _ in range(count)]) + 0.1
    )


@pytest.mark.parametrize("after", [0, 1, 37, 256, 300, 1000])
def test_a_restored_grouped_sampler_continues_exactly(after: int, tmp_path: Path) -> None:
    original = grouped(seed=11)
    draw(original, after)
    torch.save(original.state_dict(), tmp_path / "sampler.pt")
    restored = grouped(seed=11)
    restored.load_state_dict(json.loads(json.dumps(torch.load(tmp_path / "sampler.pt", weights_only=True))))
    assert draw(restored, 1000) == draw(original, 1000)


def test_lengths_are_asked_once_per_record() -> None:
    asked: Counter[str] = Counter()

    def counting(record: Record) -> tuple[int, int]:
        asked[record.origin] += 1
        return lengths_by_origin(record)

    sampler = LengthGroupedSampler(MixtureSampler(RECORDS, WEIGHTS, seed=1), MICRO_BATCH, counting)
    draw(sampler, 2000)
    assert set(asked.values()) == {1}


def test_a_plain_state_resumes_grouped_and_a_grouped_state_is_refused_plain() -> None:
    plain = MixtureSampler(RECORDS, WEIGHTS, seed=3)
    draw(plain, 50)
    sampler = grouped(seed=3)
    sampler.load_state_dict(plain.state_dict())  # a checkpoint from before grouping
    assert Counter(draw(sampler, mixture.POOL_MICRO_BATCHES * MICRO_BATCH)) == Counter(
        draw(plain, mixture.POOL_MICRO_BATCHES * MICRO_BATCH)
    )
    draw(sampler, 3)
    with pytest.raises(ValueError, match="group_by_length"):
        MixtureSampler(RECORDS, WEIGHTS, seed=3).load_state_dict(sampler.state_dict())
