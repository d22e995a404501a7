"""Reading the mixture's sources: JSONL, JSON arrays (LLaVA's layout), Parquet, folders of them, s3:// and hf://
datasets.

`validate_sources` reads every source to the end before training starts, so a broken line fails the job in
the validating state with a list of what is wrong, not hours into training.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from lingudistill import uris
from lingudistill.data.records import DataError, Record, load_image, parse_record
from lingudistill.spec import MixtureSource

JSONL_SUFFIXES = (".jsonl", ".ndjson")
JSON_ARRAY_SUFFIXES = (".json",)
PARQUET_SUFFIXES = (".parquet",)
DATA_SUFFIXES = JSONL_SUFFIXES + JSON_ARRAY_SUFFIXES + PARQUET_SUFFIXES
_PARQUET_BATCH_ROWS = 1024
_PROBLEMS_SHOWN = 20


@dataclass(frozen=True)
class _Row:
    """One raw record, or the reason it could not be read."""

    origin: str
    base_dir: Path | None
    value: object = None
    error: str | None = None


@dataclass(frozen=True)
class Problem:
    source: str
    origin: str
    message: str

    def __str__(self) -> str:
        return f"{self.source} {self.origin}: {self.message}"


@dataclass
class ValidationReport:
    counts: dict[str, int] = field(default_factory=dict)  # valid records per source
    problems: list[Problem] = field(default_factory=list)  # the first `max_problems`
    total_problems: int = 0
    max_problems: int = 100

    def add(self, problem: Problem) -> None:
        self.total_problems += 1
        if len(self.problems) < self.max_problems:
            self.problems.append(problem)

    @property
    def ok(self) -> bool:
        return self.total_problems == 0

    def raise_if_failed(self) -> None:
        if self.ok:
            return
        lines = [str(problem) for problem in self.problems[:_PROBLEMS_SHOWN]]
        if self.total_problems > len(lines):
            lines.append(f"... and {self.total_problems - len(lines)} more")
        raise DataError(f"{self.total_problems} problem(s) in the training data:\n" + "\n".join(lines))


def read_source(source: MixtureSource) -> Iterator[Record]:
    """The records of `source`, in file order, at most `max_records`. Raises DataError at the first bad one."""
    for row in islice(_rows(source.uri), source.max_records):
        if row.error is not None:
            raise DataError(row.error, source=source.name, origin=row.origin)
        yield parse_record(row.value, source=source.name, origin=row.origin, base_dir=row.base_dir)


def load_sources(sources: list[MixtureSource]) -> dict[str, list[Record]]:
    """Every record of every source in memory (records are small: images stay locators)."""
    return {source.name: list(read_source(source)) for source in sources}


def validate_sources(
    sources: list[MixtureSource], *, decode_images: bool = True, max_problems: int = 100
) -> ValidationReport:
    """Read every source fully, check every record (and decode its images), and report what is wrong."""
    report = ValidationReport(max_problems=max_problems)
    for source in sources:
        report.counts[source.name] = _validate_source(source, report, decode_images)
    return report


def _validate_source(source: MixtureSource, report: ValidationReport, decode_images: bool) -> int:
    count = 0
    try:
        for row in islice(_rows(source.uri), source.max_records):
            problem = _check_row(source.name, row, decode_images)
            if problem is None:
                count += 1
            else:
                report.add(problem)
    except Exception as exc:  # any failure to read the source is a problem to report, whatever raised it
        report.add(Problem(source.name, source.uri, f"cannot read: {type(exc).__name__}: {exc}"))
        return count
    if count == 0:
        report.add(Problem(source.name, source.uri, "the source has no valid records"))
    return count


def _check_row(source: str, row: _Row, decode_images: bool) -> Problem | None:
    if row.error is not None:
        return Problem(source, row.origin, row.error)
    try:
        record = parse_record(row.value, source=source, origin=row.origin, base_dir=row.base_dir)
        for ref in record.images:
            # an inline image is decoded even when no image is fetched: it is in the record already, and only
            # decoding (under load_image's pixel bound) finds a decompression bomb or a broken file (issue 15)
            if decode_images or ref.kind == "data":
                load_image(ref)
            elif ref.kind == "path" and not Path(ref.value).is_file():
                raise DataError(f"image {ref.value} does not exist")
    except DataError as exc:
        return Problem(source, row.origin, exc.reason)
    return None


def _rows(uri: str) -> Iterator[_Row]:
    if uris.uri_scheme(uri) == "hf":
        yield from _hf_rows(uri)
        return
    for path, name in _data_files(uri):
        if path.suffix.lower() in PARQUET_SUFFIXES:
            yield from _parquet_rows(path, name)
        elif path.suffix.lower() in JSON_ARRAY_SUFFIXES:
            yield from _json_array_rows(path, name)
        else:
            yield from _jsonl_rows(path, name)


def _data_files(uri: str) -> list[tuple[Path, str]]:
    """(local path, name shown in messages) of every data file `uri` names; a folder's files sorted by path."""
    local = uris.fetch(uri)
    shown = uri.rstrip("/") if uris.uri_scheme(uri) == "s3" else str(local)
    if not local.is_dir():
        if local.suffix.lower() not in DATA_SUFFIXES:
            raise DataError(f"{uri}: unsupported file type; expected .jsonl, .ndjson, .json or .parquet")
        return [(local, shown)]
    files = sorted(
        path.relative_to(local)
        for path in local.rglob("*")
        if path.is_file()
        and path.suffix.lower() in DATA_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(local).parts)
    )
    return [(local / relative, f"{shown}/{relative.as_posix()}") for relative in files]


def _jsonl_rows(path: Path, name: str) -> Iterator[_Row]:
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            origin = f"{name}:{number}"
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield _Row(origin, path.parent, error=f"not UTF-8 text: {exc.reason} at byte {exc.start}")
                continue
            if not text.strip():
                continue
            try:
                yield _Row(origin, path.parent, value=json.loads(text))
            except json.JSONDecodeError as exc:
                yield _Row(origin, path.parent, error=f"invalid JSON: {exc.msg} (column {exc.colno})")


def _json_array_rows(path: Path, name: str) -> Iterator[_Row]:
    """The items of a JSON array file (LLaVA's layout), each named by the line it starts on."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        yield _Row(name, path.parent, error=f"not UTF-8 text: {exc.reason} at byte {exc.start}")
        return
    items = _JsonArrayItems(text)
    try:
        for line, value in items:
            yield _Row(f"{name}:{line}", path.parent, value=value)
    except json.JSONDecodeError as exc:
        yield _Row(f"{name}:{exc.lineno}", path.parent, error=f"invalid JSON: {exc.msg} (column {exc.colno})")


class _JsonArrayItems:
    """Decode `[item, item, ...]` one item at a time, keeping the line each item starts on."""

    _SPACE = " \t\r\n"

    def __init__(self, text: str) -> None:
        self.text, self.decoder = text, json.JSONDecoder()
        self.position, self.line, self.counted_to = 0, 1, 0

    def __iter__(self) -> Iterator[tuple[int, object]]:
        self._expect("[", "a .json dataset must be one JSON array of records (use .jsonl for one record a line)")
        if self._peek() == "]":
            return
        while True:
            start = self._skip_space()
            value, self.position = self.decoder.raw_decode(self.text, start)
            yield self._line_at(start), value
            if self._peek() == "]":
                return
            self._expect(",", "expected ',' or ']' after an array item")

    def _skip_space(self) -> int:
        while self.position < len(self.text) and self.text[self.position] in self._SPACE:
            self.position += 1
        return self.position

    def _peek(self) -> str:
        self._skip_space()
        return self.text[self.position : self.position + 1]

    def _expect(self, char: str, message: str) -> None:
        if self._peek() != char:
            raise json.JSONDecodeError(message, self.text, self.position)
        self.position += 1

    def _line_at(self, position: int) -> int:
        # counted incrementally, so a large file costs one pass over its newlines
        self.line += self.text.count("\n", self.counted_to, position)
        self.counted_to = position
        return self.line


def _parquet_rows(path: Path, name: str) -> Iterator[_Row]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        for value in batch.to_pylist():
            number += 1
            yield _Row(f"{name}:row {number}", path.parent, value=value)


def _hf_rows(uri: str) -> Iterator[_Row]:
    repo_id, revision, split = uris.parse_hf_uri(uri)
    try:
        import datasets
    except ImportError:
        raise ImportError(f"{uri}: reading hf:// datasets needs the 'datasets' package: pip install datasets") from None
    rows = datasets.load_dataset(repo_id, revision=revision, split=split or "train")
    for number, value in enumerate(rows, start=1):
        # base_dir None: a hub dataset may not name files on this machine
        yield _Row(f"{uri}:row {number}", None, value=value)


def source_sha256(source: MixtureSource) -> str | None:
    """sha256 over the data files of a source (name and content), for provenance; None for hub datasets."""
    if uris.uri_scheme(source.uri) == "hf":
        return None
    digest = hashlib.sha256()
    for path, name in _data_files(source.uri):
        digest.update(name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
