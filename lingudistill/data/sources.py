"""Reading the mixture's sources: JSONL, JSON arrays (LLaVA's layout), Parquet, folders of them, s3:// and hf://
datasets.

`validate_sources` reads every source to the end before training starts, so a broken line fails the job in
the validating state with a list of what is wrong, not hours into training. It streams: one record at a time
(a JSON array file one chunk at a time), so it holds no more of a large source than training does.
`load_sources` holds an index per source, not its records (`readers`): memory stays flat as the data grow.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

from lingudistill import uris
from lingudistill.data import readers
from lingudistill.data.readers import Row
from lingudistill.data.records import DataError, Record, load_image, parse_record
from lingudistill.spec import MixtureSource

JSONL_SUFFIXES = (".jsonl", ".ndjson")
JSON_ARRAY_SUFFIXES = (".json",)
PARQUET_SUFFIXES = (".parquet",)
DATA_SUFFIXES = JSONL_SUFFIXES + JSON_ARRAY_SUFFIXES + PARQUET_SUFFIXES
_PROBLEMS_SHOWN = 20


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
    for row in itertools.islice(_rows(source.uri), source.max_records):
        if row.error is not None:
            raise DataError(row.error, source=source.name, origin=row.origin)
        yield parse_record(row.value, source=source.name, origin=row.origin, base_dir=row.base_dir)


def load_sources(sources: list[MixtureSource]) -> dict[str, IndexedSource]:
    """Every source, indexed: its records by position, each read and validated when it is asked for."""
    return {source.name: IndexedSource(source) for source in sources}


class IndexedSource(Sequence[Record]):
    """The records of one source by position, in file order, at most `max_records`; only an index is held.

    Reading record i parses and validates it then (DataError naming the source and file:line or row); the
    `validating` stage has already read every record, so in training that only happens if a file changed.
    """

    def __init__(self, source: MixtureSource) -> None:
        self.name = source.name
        try:
            self.files = _indexes(source.uri, source.max_records)
        except DataError as exc:  # a file that cannot be indexed (a broken JSON array, an unknown file type)
            raise DataError(exc.reason, source=source.name, origin=exc.origin) from None
        self.starts = list(itertools.accumulate((len(rows) for rows in self.files), initial=0))
        self.size = min(self.starts[-1], source.max_records if source.max_records is not None else self.starts[-1])

    def __len__(self) -> int:
        return self.size

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.size))]
        if not -self.size <= index < self.size:
            raise IndexError(f"record {index} of a source of {self.size}")
        index %= self.size
        file = bisect.bisect_right(self.starts, index) - 1
        row = self.files[file].row(index - self.starts[file])
        if row.error is not None:
            raise DataError(row.error, source=self.name, origin=row.origin)
        return parse_record(row.value, source=self.name, origin=row.origin, base_dir=row.base_dir)


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
        for row in itertools.islice(_rows(source.uri), source.max_records):
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


def _check_row(source: str, row: Row, decode_images: bool) -> Problem | None:
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


def _rows(uri: str) -> Iterator[Row]:
    if uris.uri_scheme(uri) == "hf":
        yield from readers.hf_rows(uri)
        return
    for path, name in _data_files(uri):
        if path.suffix.lower() in PARQUET_SUFFIXES:
            yield from readers.parquet_rows(path, name)
        elif path.suffix.lower() in JSON_ARRAY_SUFFIXES:
            yield from readers.json_array_rows(path, name)
        else:
            yield from readers.jsonl_rows(path, name)


def _indexes(uri: str, limit: int | None) -> list[readers.IndexedRows]:
    """The index of each data file of `uri`, up to the file that holds record `limit`, which is indexed that far."""
    if uris.uri_scheme(uri) == "hf":
        return [readers.HfIndex(uri)]
    indexes: list[readers.IndexedRows] = []
    row_groups = readers.RowGroupCache()
    for path, name in _data_files(uri):
        left = None if limit is None else limit - sum(len(index) for index in indexes)
        if left == 0:
            break
        if path.suffix.lower() in PARQUET_SUFFIXES:
            indexes.append(readers.ParquetIndex(path, name, row_groups))
        elif path.suffix.lower() in JSON_ARRAY_SUFFIXES:
            indexes.append(readers.JsonArrayIndex(path, name, left))
        else:
            indexes.append(readers.JsonlIndex(path, name, left))
    return indexes


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
