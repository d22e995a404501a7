from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def write_suite(tmp_path: Path):  # type: ignore[no-untyped-def]
    def write(name: str, items: list[dict]) -> Path:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
        return path

    return write
