"""Make a local JSONL (or LLaVA-style JSON array) dataset self-contained before upload: local images become
base64 data URIs.

A dataset names its images by paths relative to its own folder. Once uploaded, that folder is gone, so the
client inlines every image the records name (training records' `images` and image parts, evaluation items'
`image`) and uploads the result. Files without local images are uploaded as they are.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from service.client.models import LinguDistillError

IMAGE_KEYS = {"image", "images", "url", "path"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def self_contained(path: Path) -> Path:
    """`path` itself when it names no local image, else a temporary JSONL copy with the images inlined.

    A .json file (LLaVA's layout: one array of records) is always rewritten as JSONL, one record a line."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _write_jsonl(_array_items(path), path.parent.resolve(), keep_unchanged=None)
    if suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as lines:
            return _write_jsonl(_line_items(lines), path.parent.resolve(), keep_unchanged=path)
    return path


def _line_items(lines: Iterable[str]) -> Iterator[Any]:
    """Each line's record, or the line itself (a str) when it is blank or not JSON: the server names it."""
    for line in lines:
        try:
            yield json.loads(line) if line.strip() else line
        except json.JSONDecodeError:
            yield line


def _array_items(path: Path) -> list[Any]:
    try:
        items = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise LinguDistillError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(items, list):
        raise LinguDistillError(f"{path}: a .json dataset must be one JSON array of records (or use .jsonl)")
    return items


def _write_jsonl(items: Iterable[Any], folder: Path, *, keep_unchanged: Path | None) -> Path:
    """The items as a temporary JSONL file with local images inlined; `keep_unchanged` when nothing changed."""
    changed = False
    output = tempfile.NamedTemporaryFile(  # noqa: SIM115 - returned to the caller, who deletes it
        "w", prefix="ld-upload-", suffix=".jsonl", delete=False, encoding="utf-8"
    )
    with output:
        for item in items:
            if isinstance(item, str):
                output.write(item if item.endswith("\n") else item + "\n")
                continue
            inlined = _inline(item, folder, under_image_key=False)
            changed |= inlined != item
            output.write(json.dumps(inlined) + "\n")
    if keep_unchanged is not None and not changed:
        Path(output.name).unlink()
        return keep_unchanged
    return Path(output.name)


def _inline(value: Any, folder: Path, *, under_image_key: bool) -> Any:
    if isinstance(value, dict):
        return {k: _inline(v, folder, under_image_key=k in IMAGE_KEYS) for k, v in value.items()}
    if isinstance(value, list):
        return [_inline(v, folder, under_image_key=under_image_key) for v in value]
    if isinstance(value, str) and under_image_key:
        return _data_uri(value, folder) or value
    return value


def _data_uri(locator: str, folder: Path) -> str | None:
    """A data URI for a relative path naming an image file inside `folder`; None for anything else."""
    if "://" in locator or locator.startswith("data:") or Path(locator).suffix.lower() not in IMAGE_SUFFIXES:
        return None
    candidate = (folder / locator).resolve()
    if not candidate.is_file() or not candidate.is_relative_to(folder):
        return None  # outside the dataset's folder: left as is, and the server refuses it
    mime = mimetypes.guess_type(candidate.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(candidate.read_bytes()).decode('ascii')}"
