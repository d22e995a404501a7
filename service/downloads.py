"""Every file the API streams (model files, checkpoint files, datasets, report files) goes out through
`file_response`: HEAD answers the headers alone, and a single `Range: bytes=...` answers 206 with that part, so an
interrupted multi-gigabyte model download resumes where it stopped (`curl -C -`, `wget -c`, huggingface_hub).

Several ranges in one request are not supported: the whole file is sent (RFC 9110 lets a server ignore Range). A
range that cannot be satisfied, or that is not `bytes=FIRST-[LAST]` / `bytes=-SUFFIX`, is a 416 problem.
`If-Range` with an ETag that no longer matches sends the whole file, so a resumed download never mixes versions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from service.errors import AppError, problem_responses
from service.storage import CHUNK, Storage

_RANGE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")  # 19 digits: no 5000-digit int() here either


class RangeNotSatisfiable(AppError):
    status, code, title = 416, "range_not_satisfiable", "The requested range is not satisfiable"

    def __init__(self, detail: str, size: int) -> None:
        super().__init__(detail)
        self.size = size

    def headers(self) -> dict[str, str]:
        return {"Content-Range": f"bytes */{self.size}", "Accept-Ranges": "bytes"}


@dataclass(frozen=True)
class StoredFile:
    key: str
    size: int
    media_type: str = "application/octet-stream"
    sha256: str | None = None  # sent as ETag and X-Checksum-Sha256 when known
    headers: dict[str, str] | None = None  # extra headers (a Content-Security-Policy for report files)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte positions, inclusive; None for the whole file."""
    if header is None or "," in header:
        return None
    match = _RANGE.match(header.strip().replace(" ", ""))
    if not match or match.group(1) == match.group(2) == "":
        raise RangeNotSatisfiable(f"cannot read the range {header!r}: use bytes=FIRST-[LAST] or bytes=-SUFFIX", size)
    first, last = match.group(1), match.group(2)
    if first == "":  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(f"the range {header!r} selects no byte of a {size}-byte file", size)
        return max(size - suffix, 0), size - 1
    start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise RangeNotSatisfiable(f"the range {header!r} is outside the file of {size} bytes", size)
    return start, end


def iter_range(storage: Storage, key: str, start: int, length: int) -> Iterator[bytes]:
    """`length` bytes of the object from `start`: a local file seeks; a stream (S3) skips what comes before."""
    handle = storage.open(key)
    try:
        if handle.seekable():
            handle.seek(start)
        else:
            while start > 0:
                skipped = len(handle.read(min(CHUNK, start)))
                if skipped == 0:
                    return
                start -= skipped
        while length > 0 and (chunk := handle.read(min(CHUNK, length))):
            length -= len(chunk)
            yield chunk
    finally:
        handle.close()


def file_response(request: Request, storage: Storage, file: StoredFile) -> Response:
    headers = {"Accept-Ranges": "bytes", **(file.headers or {})}
    if file.sha256:
        headers |= {"ETag": f'"{file.sha256}"', "X-Checksum-Sha256": file.sha256}
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range != headers.get("ETag"):
        wanted = None  # the file changed since the client's first part: send all of it
    span = parse_range(wanted, file.size)
    start, end = span or (0, file.size - 1)
    length = end - start + 1 if file.size else 0
    headers["Content-Length"] = str(length)
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{file.size}"
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=file.media_type)
    body = iter_range(storage, file.key, start, length)
    return StreamingResponse(body, status_code=status, media_type=file.media_type, headers=headers)


def download_responses(*media_types: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI for a download route: the file (of one of `media_types`), a part of it, and the problems."""
    content = {
        t: {"schema": {"type": "string", "format": "binary"}} for t in media_types or ["application/octet-stream"]
    }
    return {
        200: {"content": content, "description": "The file (HEAD: its headers alone)"},
        206: {"content": content, "description": "The requested `Range` of the file"},
        **problem_responses(404, 416),
    }
