"""Dataset uploads: streamed to a local temp file (sha256 and size counted on the way), stored, validated."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy.orm import Session

from lingudistill.spec import MixtureSource
from service.auth import Principal
from service.datasets import repository
from service.datasets.schemas import DatasetOut, DatasetProblem
from service.downloads import StoredFile
from service.errors import AppError, DatasetNotFound, InvalidDataset, PayloadTooLarge
from service.idempotency.service import request_hash
from service.models import Dataset, new_id
from service.storage import Storage

SUFFIXES = {"jsonl": ".jsonl", "parquet": ".parquet"}
MEDIA_TYPES = {"jsonl": "application/x-ndjson", "parquet": "application/vnd.apache.parquet"}


class DatasetInUse(AppError):
    status, code, title = 409, "dataset_in_use", "A job that is not final names this dataset"


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
    # Imported here: the data readers pull in pyarrow and PIL. No image is fetched in the API; inline (data:) images
    # are decoded under the engine's pixel bound, so a decompression bomb makes the dataset invalid at upload.
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
    problem = _suite_image_problem(items, path)
    return (0, [problem]) if problem else (len(items), [])


def _suite_image_problem(items: list[Any], path: Path) -> DatasetProblem | None:
    """Inline images decoded under the engine's pixel bound, local ones required to exist (as for training
    records); s3:// images are not fetched by the API."""
    from lingudistill.data.records import DataError, load_image

    for item in items:
        image = item.image
        try:
            if image is not None and image.kind == "data":
                load_image(image)
            elif image is not None and image.kind == "path" and not Path(image.value).is_file():
                raise DataError(f"image {PurePosixPath(image.value).name} does not exist")
        except DataError as exc:
            return DatasetProblem(origin=item.origin.replace(str(path), "upload"), message=exc.reason)
    return None


@dataclass(frozen=True)
class Upload:
    spooled: Spooled
    name: str
    format: str
    kind: str

    def request_hash(self) -> str:
        """What makes two uploads the same request, for Idempotency-Key."""
        return request_hash(
            {"name": self.name, "format": self.format, "kind": self.kind, "sha256": self.spooled.sha256}
        )


def ingest(session: Session, storage: Storage, principal: Principal, upload: Upload) -> Dataset:
    dataset_id = new_id("ds")
    key = f"datasets/{principal.tenant_id}/{dataset_id}/data{SUFFIXES[upload.format]}"
    spooled = upload.spooled
    storage.put_file(key, spooled.path)
    count, problems = validate_file(spooled.path, upload.kind)
    dataset = Dataset(
        id=dataset_id,
        tenant_id=principal.tenant_id,
        name=upload.name,
        format=upload.format,
        kind=upload.kind,
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


def dataset_file(dataset: Dataset) -> StoredFile:
    filename = f"{dataset.id}{SUFFIXES[dataset.format]}"
    return StoredFile(
        key=dataset.storage_key,
        size=dataset.size_bytes,
        media_type=MEDIA_TYPES[dataset.format],
        sha256=dataset.sha256,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def delete_dataset(session: Session, storage: Storage, principal: Principal, dataset_id: str) -> None:
    """Refused while a queued or running job names the dataset; a finished job keeps its results, and a retry of
    a failed or cancelled one that names it is refused (the retry checks its URIs again). The row goes first: if
    removing the file fails, the transaction rolls back and both stay."""
    dataset = repository.get_dataset_locked(session, principal, dataset_id, exclusive=True)
    if dataset is None:
        raise DatasetNotFound(f"no dataset {dataset_id}")
    users = repository.unfinished_jobs_naming(session, dataset.tenant_id, dataset.id)
    if users:
        raise DatasetInUse(f"dataset {dataset.id} is named by job(s) {', '.join(users)}: cancel them or let them end")
    repository.delete_dataset(session, dataset)
    storage.delete(dataset.storage_key)


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
