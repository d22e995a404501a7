"""LLaVA, ShareGPT and Cauldron layouts: read like our own records, with the same checks and places in errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from lingudistill.data import DataError, load_images, parse_record, read_source, validate_sources
from lingudistill.pipeline import run_job
from lingudistill.spec import MixtureSource, load_spec
from tests.engine.conftest import COLOURS, tiny_job  # noqa: F401 - fixture


def _png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _llava_item(index: int, colour: str) -> dict:
    return {
        "id": f"item-{index}",
        "image": f"images/{index}.png",
        "conversations": [
            {"from": "human", "value": "<image>\nwhat colour is the square ?"},
            {"from": "gpt", "value": f"the square is {colour} ."},
        ],
    }


def _write_llava_json(folder: Path, count: int = 4) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    items = []
    for index in range(count):
        colour = COLOURS[index % len(COLOURS)]
        (folder / "images" / f"{index}.png").write_bytes(_png(colour))
        items.append(_llava_item(index, colour))
    path = folder / "llava.json"
    path.write_text(json.dumps(items, indent=2))  # pretty-printed, as LLaVA ships it: items span many lines
    return path


def _write_cauldron(path: Path, count: int = 4) -> Path:
    rows = [
        {
            "images": [{"bytes": _png(COLOURS[i % len(COLOURS)]), "path": None}],
            "texts": [
                {
                    "user": "what colour is the square ?",
                    "assistant": f"the square is {COLOURS[i % 4]} .",
                    "source": "x",
                },
                {"user": "is it a square ?", "assistant": "yes .", "source": "x"},
            ],
        }
        for i in range(count)
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _source(path: Path, name: str = "data") -> MixtureSource:
    return MixtureSource(name=name, uri=str(path))


def test_a_llava_json_array_reads_as_chat_records_named_by_the_line_each_starts_on(tmp_path: Path) -> None:
    path = _write_llava_json(tmp_path)
    records = list(read_source(_source(path)))
    starts = [number for number, line in enumerate(path.read_text().splitlines(), start=1) if line == "  {"]
    assert [r.origin for r in records] == [f"{path}:{line}" for line in starts]
    first = records[0]
    assert first.messages == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what colour is the square ?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "the square is red ."}]},
    ]
    assert first.images[0].value == str(tmp_path / "images" / "0.png")
    assert load_images(first)[0].getpixel((0, 0)) == (255, 0, 0)


def test_llava_jsonl_without_a_placeholder_puts_the_image_first_in_the_first_user_turn(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(_png("blue"))
    item = {
        "image": "a.png",
        "conversations": [{"from": "human", "value": "describe"}, {"from": "gpt", "value": "blue"}],
    }
    (tmp_path / "d.jsonl").write_text(json.dumps(item) + "\n")
    [record] = read_source(_source(tmp_path / "d.jsonl"))
    assert record.messages[0]["content"] == [{"type": "image"}, {"type": "text", "text": "describe"}]


def test_sharegpt_keeps_system_and_every_turn_in_order() -> None:
    turns = [
        {"from": "system", "value": "be brief"},
        {"from": "human", "value": "hi"},
        {"from": "gpt", "value": "hello"},
        {"from": "user", "value": "and <image> this?"},
        {"from": "chatgpt", "value": "a cat"},
    ]
    record = parse_record(
        {"conversations": turns, "images": ["data:image/png;base64,iVBORw0KGgo="]},
        source="chat",
        origin="f:1",
        base_dir=None,
    )
    assert [m["role"] for m in record.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert record.messages[3]["content"] == [
        {"type": "text", "text": "and"},
        {"type": "image"},
        {"type": "text", "text": "this?"},
    ]
    assert len(record.images) == 1


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"conversations": [{"from": "human", "value": "<image> <image> hi"}, {"from": "gpt", "value": "x"}],
          "image": "a.png"}, "2 <image> placeholder(s) but 1 image(s)"),
        ({"conversations": [{"from": "robot", "value": "hi"}]}, "conversation turn 1 is from 'robot'"),
        ({"conversations": [{"from": "human", "value": 3}]}, "conversation turn 1 needs a 'value' string"),
        ({"conversations": []}, "'conversations' must be a non-empty list"),
        ({"conversations": [{"from": "gpt", "value": "x"}], "image": "a.png"}, "no user turn to put them in"),
        ({"conversations": [{"from": "human", "value": "hi"}]}, "the last message must be an assistant turn"),
        ({"texts": [{"user": "hi"}]}, "texts entry 1 needs 'user' and 'assistant' strings"),
        ({"texts": "hi"}, "'texts' must be a non-empty list"),
    ],
)  # fmt: skip
def test_a_broken_layout_is_a_data_error_naming_the_source_and_place(tmp_path: Path, record, message) -> None:
    (tmp_path / "a.png").write_bytes(_png("red"))
    with pytest.raises(DataError) as raised:
        parse_record(record, source="mine", origin="d.jsonl:7", base_dir=tmp_path)
    assert message in str(raised.value) and str(raised.value).startswith("mine d.jsonl:7: ")


def test_a_json_file_that_is_not_an_array_or_breaks_midway_is_named_by_line(tmp_path: Path) -> None:
    (tmp_path / "object.json").write_text('{"conversations": []}')
    report = validate_sources([_source(tmp_path / "object.json", "obj")])
    assert "must be one JSON array of records" in str(report.problems[0])
    items = [_llava_item(0, "red"), _llava_item(1, "green")]
    text = json.dumps(items, indent=2)
    broken = '"gpt" oops'.join(text.rsplit('"gpt"', 1))  # in the second item: the first still counts
    (tmp_path / "images").mkdir()
    for index in range(2):
        (tmp_path / "images" / f"{index}.png").write_bytes(_png("red"))
    (tmp_path / "broken.json").write_text(broken)
    report = validate_sources([_source(tmp_path / "broken.json", "llava")])
    bad_line = next(n for n, line in enumerate(broken.splitlines(), start=1) if "oops" in line)
    assert [p.origin for p in report.problems] == [f"{tmp_path / 'broken.json'}:{bad_line}"]
    assert "invalid JSON" in report.problems[0].message and report.counts == {"llava": 1}


def test_cauldron_parquet_rows_become_multi_turn_records_with_their_images(tmp_path: Path) -> None:
    path = _write_cauldron(tmp_path / "cauldron.parquet")
    records = list(read_source(_source(path)))
    assert [r.origin for r in records] == [f"{path}:row {n}" for n in range(1, 5)]
    assert [m["role"] for m in records[1].messages] == ["user", "assistant", "user", "assistant"]
    assert records[1].messages[0]["content"][0] == {"type": "image"}
    assert load_images(records[1])[0].getpixel((0, 0)) == (0, 128, 0)  # PIL's "green"
    assert validate_sources([_source(path)]).ok


@pytest.mark.parametrize("layout", ["llava", "cauldron"])
def test_a_llava_or_cauldron_source_trains(tiny_job: Path, layout: str) -> None:  # noqa: F811 - fixture
    folder = tiny_job.parent
    path = (
        _write_llava_json(folder / "data" / "llava", 8)
        if layout == "llava"
        else _write_cauldron(folder / "data" / "cauldron.parquet", 8)
    )
    spec = yaml.safe_load(tiny_job.read_text())
    spec["mixture"][1]["uri"] = str(path.relative_to(folder))
    spec["training"]["max_steps"] = 2
    tiny_job.write_text(yaml.safe_dump(spec))
    result = run_job(load_spec(tiny_job), folder / "out")
    assert result.train.steps == 2
    lines = [json.loads(line) for line in (folder / "out" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(line["loss_ce"] > 0 for line in lines)
