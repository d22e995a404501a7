"""Dataset uploads: streamed to a local temp file (sha256 and size counted on the way), stored, validated."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from lingudistill.spec import MixtureSource
from service.auth import Principal
from service.datasets import repository
from service.datasets.schemas import DatasetOut, DatasetProblem
from service.errors import DatasetNotFound, InvalidDataset, PayloadTooLarge
from service.models import Dataset, new_id
from service.storage import Storage

SUFFIXES = {"jsonl": ".jsonl", "parquet": ".parquet"}


@dataclass
class Spooled:
    path: Path
    sha256: str
    size: int


async def spool_upload(chunks: AsyncIterator[bytes], fmt: str, max_bytes: int) -> Spooled:
    """Write the body to a temp file chunk by chunk; never more than one chunk in memory.

    The file sits alone in a fresh folder: an uploaded record naming a relative image path then finds nothing
    there, rather than probing whatever else lies in the temp directory."""
    digest, size = hashlib.sha256(), 0
    folder = Path(tempfile.mkdtemp(prefix="ld-dataset-"))
    tmp = (folder / f"upload{SUFFIXES[fmt]}").open("wb")
    try:
        with tmp:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"a dataset upload may be at most {max_bytes} bytes")
                digest.update(chunk)
                tmp.write(chunk)
        if size == 0:  # the body is required (found by Schemathesis, issue 9)
            raise InvalidDataset("the upload is empty: send the file as the request body")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return Spooled(Path(tmp.name), digest.hexdigest(), size)


def validate_file(path: Path, kind: str = "training") -> tuple[int, list[DatasetProblem]]:
    if kind == "evaluation":
        return validate_suite_file(path)
    # Imported here: the data readers pull in pyarrow and PIL. Images are not fetched or decoded in the API.
    from lingudistill.data.sources import validate_sources

    report = validate_sources([MixtureSource(name="upload", uri=str(path))], decode_images=False)
    problems = [
        DatasetProblem(
            origin=p.origin.replace(str(path), "upload"), message=p.message.replace(str(path.parent), "upload")
        )
        for p in report.problems
    ]
    return report.counts.get("upload", 0), problems


def validate_suite_file(path: Path) -> tuple[int, list[DatasetProblem]]:
    """An evaluation suite is read as the evaluator reads it; the first bad item is reported by line."""
    from lingudistill.data.records import DataError
    from lingudistill.evaluation.suites import load_suite
    from lingudistill.spec import EvalSuite

    try:
        items = load_suite(EvalSuite(name="upload", uri=str(path)))
    except DataError as exc:
        origin = (exc.origin or str(path)).replace(str(path), "upload")
        return 0, [DatasetProblem(origin=origin, message=exc.reason)]
    if not items:
        return 0, [DatasetProblem(origin="upload", message="the suite has no items")]
    return len(items), []


def ingest(
    session: Session, storage: Storage, principal: Principal, spooled: Spooled, name: str, fmt: str, kind: str
) -> Dataset:
    dataset_id = new_id("ds")
    key = f"datasets/{principal.tenant_id}/{dataset_id}/data{SUFFIXES[fmt]}"
    storage.put_file(key, spooled.path)
    count, problems = validate_file(spooled.path, kind)
    dataset = Dataset(
        id=dataset_id,
        tenant_id=principal.tenant_id,
        name=name,
        format=fmt,
        kind=kind,
        storage_key=key,
        sha256=spooled.sha256,
        size_bytes=spooled.size,
        record_count=count,
        problems=[p.model_dump() for p in problems],
        status="ready" if not problems else "invalid",
    )
    return repository.add_dataset(session, dataset)


def load_dataset(session: Session, principal: Principal, dataset_id: str) -> Dataset:
    dataset = repository.get_dataset(session, principal, dataset_id)
    if dataset is None:
        raise DatasetNotFound(f"no dataset {dataset_id}")
    return dataset


def dataset_view(dataset: Dataset) -> DatasetOut:
    return DatasetOut(
        id=dataset.id,
        name=dataset.name,
        format=dataset.format,
        kind=dataset.kind,  # type: ignore[arg-type]
        status=dataset.status,  # type: ignore[arg-type]
        sha256=dataset.sha256,
        size_bytes=dataset.size_bytes,
        record_count=dataset.record_count,
        problems=[DatasetProblem(**p) for p in dataset.problems],
        uri=f"dataset://{dataset.id}",
        created_at=dataset.created_at,
    )


def list_datasets(
    session: Session, principal: Principal, limit: int, after: str | None
) -> tuple[list[DatasetOut], str | None]:
    page = repository.list_datasets(session, principal, limit, after)
    return [dataset_view(d) for d in page.items], page.next_cursor
