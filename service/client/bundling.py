"""Make a local JSONL dataset self-contained before upload: local images become base64 data URIs.

A dataset names its images by paths relative to its own folder. Once uploaded, that folder is gone, so the
client inlines every image the records name (training records' `images` and image parts, evaluation items'
`image`) and uploads the result. Files without local images are uploaded as they are.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import tempfile
from pathlib import Path
from typing import Any

IMAGE_KEYS = {"image", "images", "url", "path"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def self_contained(path: Path) -> Path:
    """`path` itself when it names no local image, else a temporary copy with the images inlined."""
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        return path
    folder = path.parent.resolve()
    changed = False
    output = tempfile.NamedTemporaryFile(  # noqa: SIM115 - returned to the caller, who deletes it
        "w", prefix="ld-upload-", suffix=path.suffix, delete=False, encoding="utf-8"
    )
    with output, path.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                output.write(line)
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                output.write(line)  # the server reports the bad line with its number
                continue
            inlined = _inline(record, folder, under_image_key=False)
            changed |= inlined != record
            output.write(json.dumps(inlined) + "\n")
    if not changed:
        Path(output.name).unlink()
        return path
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
