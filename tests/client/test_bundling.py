"""Local datasets become self-contained uploads: images inlined, LLaVA's JSON arrays rewritten as JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from lingudistill.data import load_images, parse_record
from service.client.bundling import self_contained
from service.client.models import LinguDistillError


def _llava(folder: Path) -> Path:
    Image.new("RGB", (8, 8), "blue").save(folder / "0.png")
    item = {
        "image": "0.png",
        "conversations": [{"from": "human", "value": "<image>\nwhat?"}, {"from": "gpt", "value": "blue"}],
    }
    path = folder / "llava.json"
    path.write_text(json.dumps([item, {**item, "id": "second"}], indent=2))
    return path


def test_a_llava_json_array_is_uploaded_as_jsonl_with_its_images_inline(tmp_path: Path) -> None:
    bundle = self_contained(_llava(tmp_path))
    try:
        assert bundle.suffix == ".jsonl" and bundle.parent != tmp_path
        lines = bundle.read_text().splitlines()
        assert len(lines) == 2
        record = parse_record(json.loads(lines[0]), source="s", origin="1", base_dir=None)  # no folder needed
        assert load_images(record)[0].getpixel((0, 0)) == (0, 0, 255)
    finally:
        bundle.unlink()


def test_jsonl_without_local_images_is_uploaded_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "text.jsonl"
    path.write_text('{"prompt": "a", "response": "b"}\nnot json\n')
    assert self_contained(path) == path


@pytest.mark.parametrize(("text", "message"), [("{}", "one JSON array"), ("[{", "invalid JSON at line 1")])
def test_a_json_file_that_is_not_an_array_is_refused_before_upload(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.json").write_text(text)
    with pytest.raises(LinguDistillError, match=message):
        self_contained(tmp_path / "bad.json")
