"""Object storage behind one interface: a local directory (embedded default) or S3 (boto3; MinIO via endpoint).

Keys are '/'-separated relative paths. Every put returns the object's size and sha256, computed while streaming.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol
from urllib.parse import urlparse

CHUNK = 1024 * 1024
SHA256_META = "sha256"


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


class Storage(Protocol):
    def put_file(self, key: str, path: Path) -> StoredObject: ...
    def put_stream(self, key: str, chunks: Iterable[bytes] | IO[bytes]) -> StoredObject: ...
    def open(self, key: str) -> IO[bytes]: ...
    def iter_bytes(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def presigned_get_url(self, key: str, expires_s: int) -> str | None: ...
    def check(self) -> None: ...


class InvalidKey(ValueError):
    pass


def clean_key(key: str) -> str:
    """Refuse absolute keys and any '..' so a key never escapes its root."""
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or any(p in ("..", ".", "") for p in parts) or "\\" in key:
        raise InvalidKey(f"invalid storage key: {key!r}")
    return "/".join(parts)


def _chunks_of(source: Iterable[bytes] | IO[bytes]) -> Iterator[bytes]:
    if hasattr(source, "read"):
        while chunk := source.read(CHUNK):  # type: ignore[union-attr]
            yield chunk
    else:
        yield from source  # type: ignore[misc]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / clean_key(key)

    def put_stream(self, key: str, chunks: Iterable[bytes] | IO[bytes]) -> StoredObject:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in _chunks_of(chunks):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            os.replace(tmp, target)  # readers never see a partial object
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return StoredObject(clean_key(key), size, digest.hexdigest())

    def put_file(self, key: str, path: Path) -> StoredObject:
        with path.open("rb") as f:
            return self.put_stream(key, f)

    def open(self, key: str) -> IO[bytes]:
        return self.path(key).open("rb")

    def iter_bytes(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        with self.open(key) as f:
            while chunk := f.read(chunk_size):
                yield chunk

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix.strip("/") if prefix.strip("/") else self.root
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def presigned_get_url(self, key: str, expires_s: int) -> str | None:
        return None  # local objects are streamed by the API instead

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise OSError(f"storage root {self.root} is not writable")


class S3Storage:
    def __init__(self, bucket: str, prefix: str = "", client: Any = None, **client_kwargs: Any) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client or boto3.client("s3", **client_kwargs)
        # multipart above 64 MiB, in 64 MiB parts; boto3 streams parts and never holds the file in memory
        self.transfer = TransferConfig(multipart_threshold=64 * CHUNK, multipart_chunksize=64 * CHUNK)

    def _key(self, key: str) -> str:
        key = clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, key: str, path: Path) -> StoredObject:
        sha = file_sha256(path)
        extra = {"Metadata": {SHA256_META: sha}}
        self.client.upload_file(str(path), self.bucket, self._key(key), ExtraArgs=extra, Config=self.transfer)
        return StoredObject(clean_key(key), path.stat().st_size, sha)

    def put_stream(self, key: str, chunks: Iterable[bytes] | IO[bytes]) -> StoredObject:
        # the sha256 goes into the object's metadata, which S3 needs before the upload: spool to disk first
        with tempfile.NamedTemporaryFile(prefix="ld-upload-") as tmp:
            for chunk in _chunks_of(chunks):
                tmp.write(chunk)
            tmp.flush()
            return self.put_file(key, Path(tmp.name))

    def open(self, key: str) -> IO[bytes]:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]

    def iter_bytes(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        body = self.open(key)
        try:
            while chunk := body.read(chunk_size):
                yield chunk
        finally:
            body.close()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def size(self, key: str) -> int:
        return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])

    def sha256(self, key: str) -> str | None:
        head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        return head.get("Metadata", {}).get(SHA256_META)

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix.strip("/")) + "/" if prefix.strip("/") else (self.prefix + "/" if self.prefix else "")
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            keys += [obj["Key"] for obj in page.get("Contents", [])]
        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(k[strip:] for k in keys)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def presigned_get_url(self, key: str, expires_s: int) -> str | None:
        params = {"Bucket": self.bucket, "Key": self._key(key)}
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)

    def check(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)


def make_storage(settings: Any) -> Storage:
    """The backend named by settings.storage_url_resolved (file:///dir or s3://bucket/prefix)."""
    url = urlparse(settings.storage_url_resolved)
    if url.scheme == "file":
        return LocalStorage(Path(url.path))
    if url.scheme == "s3":
        kwargs: dict[str, Any] = {"endpoint_url": settings.s3_endpoint_url, "region_name": settings.s3_region}
        if settings.s3_access_key_id and settings.s3_secret_access_key:
            kwargs["aws_access_key_id"] = settings.s3_access_key_id.get_secret_value()
            kwargs["aws_secret_access_key"] = settings.s3_secret_access_key.get_secret_value()
        return S3Storage(url.netloc, url.path, **kwargs)
    raise ValueError(
        f"unsupported storage URL {settings.storage_url_resolved!r}: use file:///dir or s3://bucket/prefix"
    )


def copy_to_file(storage: Storage, key: str, target: Path) -> None:
    with storage.open(key) as src, target.open("wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
