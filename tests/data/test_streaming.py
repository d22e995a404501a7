"""Indexed sources (issue 17): the records an index reads are those the whole-file readers give, errors still
name the file and line or row, the sampler's order is the one it had when it held lists, and what a source holds
does not grow with its records' text."""

from __future__ import annotations

import gc
import json
import random
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lingudistill.data import mixture, readers
from lingudistill.data.mixture import LengthGroupedSampler, MixtureSampler
from lingudistill.data.records import DataError, Record, load_image, parse_record
from lingudistill.data.sources import load_sources, read_source
from lingudistill.spec import MixtureSource

from .conftest import png_bytes, write_jsonl


def source(uri: str | Path, name: str = "s", **extra: object) -> MixtureSource:
    return MixtureSource(name=name, uri=str(uri), **extra)


def indexed(spec: MixtureSource) -> list[Record]:
    return list(load_sources([spec])[spec.name])


def text_record(i: int, length: int = 20) -> dict:
    return {"prompt": f"question {i} ünïcødé", "response": f"answer {i} " + "x" * length}


# --- the same records as the whole-file readers ------------------------------------------------------------------


def test_jsonl_by_index_equals_the_file_read_in_order(tmp_path: Path) -> None:
    lines: list[object] = [text_record(i) for i in range(3 * readers.JSONL_BLOCK + 5)]
    # blank lines are skipped but still counted in line numbers, also where a block of the index starts or ends
    for at in (3 * readers.JSONL_BLOCK, 2 * readers.JSONL_BLOCK, readers.JSONL_BLOCK + 2, readers.JSONL_BLOCK, 3):
        lines[at:at] = ["", "   "]
    path = tmp_path / "t.jsonl"
    write_jsonl(path, lines)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # a byte order mark on the first line
    eager = list(read_source(source(path)))
    assert indexed(source(path)) == eager
    records = load_sources([source(path)])["s"]
    assert [records[i] for i in (196, 64, 63, 0, 128, 127, 65)] == [eager[i] for i in (196, 64, 63, 0, 128, 127, 65)]
    assert [r.origin.rsplit(":", 1)[1] for r in eager[:4]] == ["1", "2", "3", "6"]


def test_a_folder_with_every_file_type_and_max_records(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    write_jsonl(folder / "a.jsonl", [text_record(i) for i in range(5)])
    (folder / "b.json").write_text(json.dumps([text_record(i) for i in range(5, 9)], indent=2))
    pq.write_table(pa.table({"prompt": [f"q{i}" for i in range(7)], "response": ["r"] * 7}), folder / "c.parquet")
    for limit in (None, 3, 12):
        spec = source(folder, max_records=limit)
        assert indexed(spec) == list(read_source(spec))
    assert len(load_sources([source(folder, max_records=12)])["s"]) == 12


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize("indent", [None, 2])
def test_a_json_array_scanned_in_chunks_gives_every_item_and_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, indent: int | None
) -> None:
    """Small chunks split items, multi-byte characters and numbers across reads."""
    monkeypatch.setattr(readers, "_CHUNK_BYTES", chunk)
    items = [{**text_record(i), "id": 10**i} for i in range(12)]
    path = tmp_path / "llava.json"
    path.write_text("\ufeff" + json.dumps(items, indent=indent, ensure_ascii=False), encoding="utf-8")
    text_lines = path.read_text(encoding="utf-8-sig").splitlines()
    starts = [n for n, line in enumerate(text_lines, start=1) if line == "  {"] if indent else [1] * len(items)
    expected = [
        parse_record(item, source="s", origin=f"{path}:{line}", base_dir=tmp_path)
        for item, line in zip(items, starts, strict=True)
    ]
    assert list(read_source(source(path))) == expected
    assert indexed(source(path)) == expected


def test_parquet_by_index_reads_across_row_groups_and_keeps_image_bytes_lazy(tmp_path: Path) -> None:
    colours = [(i * 20, 0, 0) for i in range(10)]
    table = pa.table(
        {
            "prompt": [f"q{i}" for i in range(10)],
            "response": [f"a{i}" for i in range(10)],
            "images": [[{"bytes": png_bytes(c), "path": None}] for c in colours],
        }
    )
    path = tmp_path / "vqa.parquet"
    pq.write_table(table, path, row_group_size=3)
    records = load_sources([source(path)])["s"]
    assert len(records) == 10
    for i in [9, 0, 4, 4, 3, 8]:  # out of order, across the 4 row groups
        assert records[i].origin == f"{path}:row {i + 1}"
        assert load_image(records[i].images[0]).getpixel((0, 0)) == colours[i]
    assert list(records) == list(read_source(source(path)))


def test_hf_sources_are_indexed_through_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"prompt": "q", "response": str(i)} for i in range(4)]
    monkeypatch.setitem(sys.modules, "datasets", type(sys)("datasets"))
    sys.modules["datasets"].load_dataset = lambda repo, *, revision, split: rows  # type: ignore[attr-defined]
    records = load_sources([source("hf://org/name#train")])["s"]
    assert records[2].origin == "hf://org/name#train:row 3"
    assert records[2].messages[1]["content"][0]["text"] == "2"


# --- errors name the file and line or row ------------------------------------------------------------------------


def test_a_bad_jsonl_line_is_named_when_it_is_read(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [text_record(0), "", '{"prompt": "a", "resp', {"prompt": "only"}])
    path.write_bytes(path.read_bytes() + b'{"prompt": "\xff", "response": "b"}\n')
    records = load_sources([source(path, name="text")])["text"]
    assert len(records) == 4 and records[0].origin == f"{path}:1"
    with pytest.raises(DataError, match=rf"^text {path}:3: invalid JSON: "):
        records[1]
    with pytest.raises(DataError, match=rf"^text {path}:4: 'prompt' and 'response' must be strings"):
        records[2]
    with pytest.raises(DataError, match=rf"^text {path}:5: not UTF-8 text"):
        records[3]


def test_a_json_array_broken_midway_fails_indexing_at_its_line(tmp_path: Path) -> None:
    text = json.dumps([text_record(i) for i in range(3)], indent=2)
    broken = text.replace('"answer 2', "answer 2", 1)  # an unquoted string in the third item
    bad_line = 1 + broken[: broken.index("answer 2")].count("\n")
    (tmp_path / "broken.json").write_text(broken)
    with pytest.raises(DataError, match=rf"^s {tmp_path / 'broken.json'}:{bad_line}: invalid JSON"):
        load_sources([source(tmp_path / "broken.json")])
    (tmp_path / "object.json").write_text('{"conversations": []}')
    with pytest.raises(DataError, match=r"^s .*object\.json:1: invalid JSON: a \.json dataset must be one JSON array"):
        load_sources([source(tmp_path / "object.json")])


def test_a_bad_parquet_row_is_named_by_its_row(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"prompt": ["q", "q", "q"], "response": ["a", None, "a"]}), path, row_group_size=2)
    records = load_sources([source(path)])["s"]
    with pytest.raises(DataError, match=rf"^s {path}:row 2: "):
        records[1]
    assert records[2].origin == f"{path}:row 3"


# --- the sampler's order is the one it had over lists ------------------------------------------------------------


class ListSampler:
    """MixtureSampler as it was before indexed sources (commit d8fd31f): permutations are shuffled lists."""

    def __init__(self, records: dict[str, list[Record]], weights: dict[str, float], seed: int) -> None:
        self.records, self.seed, self.names = records, seed, sorted(records)
        self.cumulative = [sum(weights[n] for n in self.names[: i + 1]) for i in range(len(self.names))]
        self.draws, self.epoch, self.position = 0, dict.fromkeys(self.names, 0), dict.fromkeys(self.names, 0)
        self.order = {name: self.permutation(name, 0) for name in self.names}

    def next(self) -> Record:
        import bisect

        draw = random.Random(json.dumps(["source", self.seed, self.draws])).random() * self.cumulative[-1]
        name = self.names[min(bisect.bisect_right(self.cumulative, draw), len(self.names) - 1)]
        self.draws += 1
        if self.position[name] == len(self.records[name]):
            self.epoch[name] += 1
            self.position[name] = 0
            self.order[name] = self.permutation(name, self.epoch[name])
        index = self.order[name][self.position[name]]
        self.position[name] += 1
        return self.records[name][index]

    def permutation(self, name: str, epoch: int) -> list[int]:
        order = list(range(len(self.records[name])))
        random.Random(json.dumps(["epoch", self.seed, name, epoch])).shuffle(order)
        return order

    def state_dict(self) -> dict:
        sources = {
            n: {"size": len(self.records[n]), "epoch": self.epoch[n], "position": self.position[n]} for n in self.names
        }
        return {"version": 1, "seed": self.seed, "draws": self.draws, "sources": sources}


@pytest.fixture
def mixture_files(tmp_path: Path) -> list[MixtureSource]:
    sizes = {"text": 37, "vqa": 11, "ocr": 70_000}  # the last needs positions past 16 bits
    specs = []
    for name, size in sizes.items():
        write_jsonl(tmp_path / f"{name}.jsonl", [text_record(i, length=0) for i in range(size)])
        specs.append(source(tmp_path / f"{name}.jsonl", name=name, weight={"text": 5, "vqa": 3, "ocr": 2}[name]))
    return specs


def test_the_order_is_the_order_of_the_list_sampler(mixture_files: list[MixtureSource]) -> None:
    weights = {spec.name: spec.weight for spec in mixture_files}
    eager = {spec.name: list(read_source(spec)) for spec in mixture_files}
    old = ListSampler(eager, weights, seed=1234)
    new = MixtureSampler(load_sources(mixture_files), weights, seed=1234)
    count = 3_000  # text and vqa go through many epochs
    assert [new.next() for _ in range(count)] == [old.next() for _ in range(count)]
    assert new.state_dict() == old.state_dict()


def test_a_state_saved_by_the_list_sampler_resumes_indexed(mixture_files: list[MixtureSource]) -> None:
    weights = {spec.name: spec.weight for spec in mixture_files}
    old = ListSampler({spec.name: list(read_source(spec)) for spec in mixture_files}, weights, seed=5)
    for _ in range(123):
        old.next()
    new = MixtureSampler(load_sources(mixture_files), weights, seed=5)
    new.load_state_dict(json.loads(json.dumps(old.state_dict())))
    assert [new.next() for _ in range(500)] == [old.next() for _ in range(500)]


# --- exact resume across processes -------------------------------------------------------------------------------

_RESUME = textwrap.dedent(
    """
    import json, sys
    from lingudistill.data.mixture import LengthGroupedSampler, MixtureSampler
    from lingudistill.data.sources import load_sources
    from lingudistill.spec import MixtureSource

    specs = [MixtureSource(**spec) for spec in json.loads(sys.argv[1])]
    sampler = MixtureSampler(load_sources(specs), {s.name: s.weight for s in specs}, seed=77)
    if sys.argv[2] == "grouped":
        sampler = LengthGroupedSampler(sampler, 4, lambda r: (len(str(r.messages[0])), len(str(r.messages[1]))))
    if sys.argv[3] != "-":
        sampler.load_state_dict(json.loads(sys.argv[3]))
    first = [sampler.next().origin for _ in range(int(sys.argv[4]))]
    print(json.dumps({"origins": first, "state": sampler.state_dict()}))
    """
)


def _run(specs: list[MixtureSource], kind: str, state: dict | None, count: int) -> dict:
    arguments = [json.dumps([s.model_dump() for s in specs]), kind, json.dumps(state) if state else "-", str(count)]
    done = subprocess.run([sys.executable, "-c", _RESUME, *arguments], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.mark.parametrize("kind", ["plain", "grouped"])
def test_a_sampler_restored_in_a_fresh_process_continues_exactly(mixture_files: list[MixtureSource], kind: str) -> None:
    specs = mixture_files[:2]  # the small sources: several epochs in a few hundred draws
    whole = _run(specs, kind, None, 700)["origins"]
    first = _run(specs, kind, None, 300)
    rest = _run(specs, kind, first["state"], 400)["origins"]
    assert first["origins"] + rest == whole


# --- memory ------------------------------------------------------------------------------------------------------


def _held_bytes(build: object) -> int:
    """Python memory still allocated after `build()` returns, while its result is alive."""
    tracemalloc.start()
    try:
        kept = build()  # type: ignore[operator]
        held, _ = tracemalloc.get_traced_memory()
        del kept
    finally:
        tracemalloc.stop()
    return held


@pytest.mark.parametrize("suffix", ["jsonl", "json", "parquet"])
def test_a_source_holds_an_index_not_its_records(tmp_path: Path, suffix: str) -> None:
    count = 2_000
    held = {}
    for length in (10, 5_000):
        path = tmp_path / f"{length}.{suffix}"
        rows = [text_record(i, length) for i in range(count)]
        if suffix == "jsonl":
            write_jsonl(path, rows)
        elif suffix == "json":
            path.write_text(json.dumps(rows, indent=1))
        else:
            pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=100)
        held[length] = _held_bytes(lambda path=path: load_sources([source(path)]))
    # 10 MB of text against 60 kB: what a source holds does not follow the records' length
    assert held[5_000] < 1.1 * held[10] + 16_384
    assert held[5_000] < 20 * count + 65_536  # a few bytes a record


def test_a_sampler_holds_four_bytes_a_record(tmp_path: Path) -> None:
    sources = {"big": [None] * 100_000}  # the sampler only asks a source's length until a record is drawn
    held = _held_bytes(lambda: MixtureSampler(sources, {"big": 1.0}, seed=0))  # type: ignore[dict-item]
    assert held < 4 * 100_000 + 65_536


def test_lengths_are_remembered_by_position_not_by_record_identity(mixture_files: list[MixtureSource]) -> None:
    """Indexed sources read a new Record each time; an id()-keyed cache would mix up records whose ids recur."""
    specs = mixture_files[:2]
    weights = {s.name: s.weight for s in specs}
    asked: dict[str, int] = {}

    def lengths(record: Record) -> tuple[int, int]:
        asked[record.origin] = asked.get(record.origin, 0) + 1
        return len(record.messages[0]["content"][0]["text"]), int(record.origin.rsplit(":", 1)[1])

    grouped = LengthGroupedSampler(MixtureSampler(load_sources(specs), weights, seed=2), 4, lengths)
    over_lists = LengthGroupedSampler(
        MixtureSampler({s.name: list(read_source(s)) for s in specs}, weights, seed=2), 4, lengths
    )
    count = 3 * mixture.POOL_MICRO_BATCHES * 4
    assert [grouped.next() for _ in range(count)] == [over_lists.next() for _ in range(count)]
    assert set(asked.values()) == {2}  # once by each sampler


GROUP_TEXT = 2_000_000


def test_a_parquet_source_holds_one_row_group_and_no_open_file(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    rows = [text_record(i, length=GROUP_TEXT // 100) for i in range(600)]
    for shard in range(3):  # three files of two 100-row groups
        pq.write_table(pa.Table.from_pylist(rows[shard * 200 : (shard + 1) * 200]), folder / f"{shard}.parquet", 100)
    open_files = len(list(Path("/proc/self/fd").iterdir()))
    before = pa.total_allocated_bytes()
    records = load_sources([source(folder)])["s"]
    one_group = 0
    for i in (0, 250, 599, 120):  # a group of each file in turn
        assert records[i] == parse_record(
            rows[i], source="s", origin=f"{folder}/{i // 200}.parquet:row {i % 200 + 1}", base_dir=folder
        )
        one_group = max(one_group, pa.total_allocated_bytes() - before)
    assert one_group > GROUP_TEXT  # a decoded group is held while its rows are read
    gc.collect()  # pyarrow leaves its first read's buffers in a reference cycle until the collector runs
    assert pa.total_allocated_bytes() - before < 1.5 * GROUP_TEXT  # but only one, across the files
    assert len(list(Path("/proc/self/fd").iterdir())) == open_files


def test_a_file_cut_short_after_indexing_is_named(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [text_record(i) for i in range(5)])
    records = load_sources([source(path)])["s"]
    path.write_text(path.read_text().split("\n", 1)[0] + "\n")
    assert records[0].origin == f"{path}:1"
    with pytest.raises(DataError, match=rf"^s {path}: the file changed since it was indexed: record 4 is gone"):
        records[3]


def test_max_records_indexes_no_further_than_it_reads(tmp_path: Path) -> None:
    """As read_source stops at max_records, indexing stops there: what lies beyond is neither read nor checked."""
    folder = tmp_path / "data"
    write_jsonl(folder / "a.jsonl", [text_record(i) for i in range(5)] + ["{broken"])  # 6 rows, one bad
    (folder / "b.json").write_text("[" + json.dumps(text_record(5)) + ", {broken")
    (folder / "c.json").write_text("not even an array")
    for limit in (5, 6, 7):
        assert len(load_sources([source(folder, max_records=limit)])["s"]) == limit
    with pytest.raises(DataError, match=r"b\.json:1: invalid JSON"):
        load_sources([source(folder, max_records=8)])
