"""The rows of one data file, read two ways: streamed in file order (validation, `read_source`), or by index
(training), holding only an index of where each row is, never the rows.

- JSONL: the byte offset and line number of every JSONL_BLOCK-th record (a quarter of a byte a record); a read
  goes on from there past at most 63 lines. Indexing reads the file once without parsing it.
- JSON array (LLaVA's layout): the byte offset and line of each item (16 bytes a record), found by a scan that
  decodes the file in chunks, so neither indexing nor validation holds the file.
- Parquet: the first row of each row group; a row is read from its row group, and a source keeps one decoded
  row group (`RowGroupCache`) however many files it has.
- hf:// datasets: the `datasets` library's own memory-mapped Arrow table, indexed directly.

A row is a raw value or the reason it could not be read; `records.parse_record` validates it when it is read.
"""

from __future__ import annotations

import bisect
import codecs
import json
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from lingudistill import uris
from lingudistill.data.records import DataError

_PARQUET_BATCH_ROWS = 1024
_CHUNK_BYTES = 1 << 20
JSONL_BLOCK = 64
_NOT_AN_ARRAY = "a .json dataset must be one JSON array of records (use .jsonl for one record a line)"


@dataclass(frozen=True)
class Row:
    """One raw record, or the reason it could not be read."""

    origin: str
    base_dir: Path | None
    value: object = None
    error: str | None = None


class IndexedRows(Protocol):
    """The rows of one data file (or hub dataset) by position, 0-based."""

    def __len__(self) -> int: ...

    def row(self, index: int) -> Row: ...


# --- JSONL ------------------------------------------------------------------------------------------------------


def jsonl_rows(path: Path, name: str) -> Iterator[Row]:
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if not _is_blank(raw, number):
                yield _line_row(raw, number, path, name)


def _line_row(raw: bytes, number: int, path: Path, name: str) -> Row:
    """The row on line `number`, which is not blank."""
    origin = f"{name}:{number}"
    try:
        text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        return Row(origin, path.parent, error=f"not UTF-8 text: {exc.reason} at byte {exc.start}")
    try:
        return Row(origin, path.parent, value=json.loads(text))
    except json.JSONDecodeError as exc:
        return Row(origin, path.parent, error=f"invalid JSON: {exc.msg} (column {exc.colno})")


def _is_blank(raw: bytes, number: int) -> bool:
    """A line of white space only, which is no record. Decided without parsing: a record starts with '{'."""
    if raw[:1] == b"{":
        return False
    try:
        return not raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
    except UnicodeDecodeError:
        return False  # a row, whose error is reported when it is read


class JsonlIndex:
    """Where every JSONL_BLOCK-th record's line starts (byte offset and line number): a quarter of a byte a
    record. Record i is found by reading on from its block's start, past at most JSONL_BLOCK - 1 lines."""

    def __init__(self, path: Path, name: str, limit: int | None = None) -> None:
        """Indexes the first `limit` records (all when None)."""
        self.path, self.name = path, name
        self.block_offsets, self.block_lines = array("q"), array("q")
        self.count = position = 0
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                if self.count == limit:
                    break
                if not _is_blank(raw, number):
                    if self.count % JSONL_BLOCK == 0:
                        self.block_offsets.append(position)
                        self.block_lines.append(number)
                    self.count += 1
                position += len(raw)

    def __len__(self) -> int:
        return self.count

    def row(self, index: int) -> Row:
        block, skip = divmod(index, JSONL_BLOCK)
        with self.path.open("rb") as handle:
            handle.seek(self.block_offsets[block])
            for number, raw in enumerate(handle, start=self.block_lines[block]):
                if _is_blank(raw, number):
                    continue
                if skip == 0:
                    return _line_row(raw, number, self.path, self.name)
                skip -= 1
        return Row(
            self.name, self.path.parent, error=f"the file changed since it was indexed: record {index + 1} is gone"
        )


# --- JSON arrays ------------------------------------------------------------------------------------------------


class _JsonError(Exception):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line, self.message = line, message


class _TextWindow:
    """A UTF-8 file decoded a chunk at a time. `text` holds what is not yet consumed; `mark` is a position in it
    whose byte offset and line are known, moved forward by `advance` and cut off by `compact`."""

    _SPACE = " \t\r\n"

    def __init__(self, handle: BinaryIO, *, byte: int = 0, line: int = 1, column: int = 1, chunk: int = 0) -> None:
        """`handle` is at `byte`, which is on `line` and `column`; `chunk` bytes are read at a time (default
        _CHUNK_BYTES)."""
        if byte == 0 and handle.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8:
            byte = len(codecs.BOM_UTF8)  # tolerated, and not counted as text
        handle.seek(byte)
        self.handle, self.chunk = handle, chunk or _CHUNK_BYTES
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text, self.eof, self.read_bytes = "", False, byte
        self.mark, self.mark_byte, self.mark_line, self.mark_column = 0, byte, line, column

    def more(self, size: int = 0) -> bool:
        """Decode the next chunk (`size` bytes, at least a chunk) onto `text`; False at the end of the file."""
        if self.eof:
            return False
        chunk = self.handle.read(max(size, self.chunk))
        try:
            self.text += self.decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise _JsonError(None, f"not UTF-8 text: {exc.reason} at byte {self.read_bytes + exc.start}") from None
        self.read_bytes += len(chunk)
        self.eof = not chunk
        return True

    def skip_space(self, position: int) -> int:
        while True:
            while position < len(self.text) and self.text[position] in self._SPACE:
                position += 1
            if position < len(self.text) or not self.more():
                return position

    def decode(self, position: int) -> tuple[object, int]:
        """The JSON value starting at `position` and where it ends; reads on until the value is whole."""
        decoder = json.JSONDecoder()
        while True:
            try:
                value, end = decoder.raw_decode(self.text, position)
                if end < len(self.text) or self.eof:  # a number at the chunk's end may go on in the next one
                    return value, end
            except json.JSONDecodeError as exc:
                if self.eof:
                    raise self.broken(exc.pos, exc.msg) from None
            # a value longer than a chunk (an inline image): read as much again as it has so far, so that decoding
            # it again from its start costs about twice its length in all, not its length squared over the chunk
            self.more(len(self.text) - position)

    def place(self, position: int) -> tuple[int, int]:
        """(line, column) of `position`, at or after the mark."""
        passed = self.text[self.mark : position]
        newlines = passed.count("\n")
        column = len(passed) - passed.rfind("\n") if newlines else self.mark_column + len(passed)
        return self.mark_line + newlines, column

    def advance(self, position: int) -> None:
        """Move the mark to `position` (not before it), keeping its byte offset, line and column."""
        self.mark_byte += len(self.text[self.mark : position].encode())
        (self.mark_line, self.mark_column), self.mark = self.place(position), position

    def broken(self, position: int, message: str) -> _JsonError:
        line, column = self.place(position)
        return _JsonError(line, f"invalid JSON: {message} (column {column})")

    def compact(self) -> None:
        """Forget the text before the mark, so the window stays about a chunk long."""
        if self.mark > self.chunk:
            self.text, self.mark = self.text[self.mark :], 0


def _json_array_items(handle: BinaryIO) -> Iterator[tuple[int, int, object]]:
    """(byte offset, line, value) of each item of `[item, item, ...]`; raises _JsonError where the file breaks."""
    window = _TextWindow(handle)
    position = window.skip_space(0)
    if window.text[position : position + 1] != "[":
        raise window.broken(position, _NOT_AN_ARRAY)
    position = window.skip_space(position + 1)
    if window.text[position : position + 1] == "]":
        return
    while True:
        value, end = window.decode(position)
        window.advance(position)
        yield window.mark_byte, window.mark_line, value
        position = window.skip_space(end)
        following = window.text[position : position + 1]
        if following == "]":
            return
        if following != ",":
            raise window.broken(position, "expected ',' or ']' after an array item")
        position = window.skip_space(position + 1)
        window.advance(position)
        window.compact()
        position = window.mark


def json_array_rows(path: Path, name: str) -> Iterator[Row]:
    """The items of a JSON array file, each named by the line it starts on."""
    with path.open("rb") as handle:
        try:
            for _, line, value in _json_array_items(handle):
                yield Row(f"{name}:{line}", path.parent, value=value)
        except _JsonError as exc:
            yield Row(name if exc.line is None else f"{name}:{exc.line}", path.parent, error=exc.message)


class JsonArrayIndex:
    def __init__(self, path: Path, name: str, limit: int | None = None) -> None:
        """Indexes the first `limit` items (all when None)."""
        self.path, self.name = path, name
        self.offsets, self.lines = array("q"), array("q")
        with path.open("rb") as handle:
            try:
                for offset, line, _ in _json_array_items(handle):
                    self.offsets.append(offset)
                    self.lines.append(line)
                    if len(self.offsets) == limit:  # before the next item is decoded: it may be broken
                        break
            except _JsonError as exc:
                raise DataError(exc.message, origin=name if exc.line is None else f"{name}:{exc.line}") from None

    def __len__(self) -> int:
        return len(self.offsets)

    def row(self, index: int) -> Row:
        origin = f"{self.name}:{self.lines[index]}"
        with self.path.open("rb") as handle:
            handle.seek(self.offsets[index])
            # one item, usually a few kB: read it in small chunks
            window = _TextWindow(
                handle, byte=self.offsets[index], line=self.lines[index], chunk=min(_CHUNK_BYTES, 1 << 14)
            )
            try:
                value, _ = window.decode(window.skip_space(0))
            except _JsonError as exc:
                return Row(origin, self.path.parent, error=exc.message)
        return Row(origin, self.path.parent, value=value)


# --- Parquet ----------------------------------------------------------------------------------------------------


def parquet_rows(path: Path, name: str) -> Iterator[Row]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        for value in batch.to_pylist():
            number += 1
            yield Row(f"{name}:row {number}", path.parent, value=value)


class RowGroupCache:
    """The one decoded Parquet row group a source keeps: (file, group) and its table."""

    def __init__(self) -> None:
        self.key: tuple[Path, int] | None = None
        self.table: Any = None

    def get(self, path: Path, group: int, metadata: Any) -> Any:
        if self.key != (path, group):
            import pyarrow.parquet as pq

            self.key, self.table = None, None  # the old row group goes before the next is decoded
            with pq.ParquetFile(path, metadata=metadata) as file:  # no file stays open between reads
                self.table = file.read_row_group(group)
            self.key = (path, group)
        return self.table


class ParquetIndex:
    """Rows by (row group, row). A read decodes its row group into `cache`, which a source's files share, so a
    source holds one row group however many files it has."""

    def __init__(self, path: Path, name: str, cache: RowGroupCache) -> None:
        import pyarrow.parquet as pq

        self.path, self.name, self.cache = path, name, cache
        self.metadata = pq.read_metadata(path)  # kept: reading a row group then skips the footer
        self.starts = array("q", [0])
        for group in range(self.metadata.num_row_groups):
            self.starts.append(self.starts[-1] + self.metadata.row_group(group).num_rows)

    def __len__(self) -> int:
        return self.starts[-1]

    def row(self, index: int) -> Row:
        group = bisect.bisect_right(self.starts, index) - 1
        table = self.cache.get(self.path, group, self.metadata)
        (value,) = table.slice(index - self.starts[group], 1).to_pylist()
        return Row(f"{self.name}:row {index + 1}", self.path.parent, value=value)


# --- hf:// ------------------------------------------------------------------------------------------------------


def hf_dataset(uri: str) -> Any:  # a datasets.Dataset: memory-mapped, indexable
    repo_id, revision, split = uris.parse_hf_uri(uri)
    try:
        import datasets
    except ImportError:
        raise ImportError(f"{uri}: reading hf:// datasets needs the 'datasets' package: pip install datasets") from None
    return datasets.load_dataset(repo_id, revision=revision, split=split or "train")


def hf_rows(uri: str) -> Iterator[Row]:
    for number, value in enumerate(hf_dataset(uri), start=1):
        # base_dir None: a hub dataset may not name files on this machine
        yield Row(f"{uri}:row {number}", None, value=value)


class HfIndex:
    """A `datasets.Dataset` is a memory-mapped Arrow table: indexing it reads one row from the mapped file."""

    def __init__(self, uri: str) -> None:
        self.uri, self.rows = uri, hf_dataset(uri)

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, index: int) -> Row:
        return Row(f"{self.uri}:row {index + 1}", None, value=self.rows[index])
