"""Turning the URIs of a job spec into local files.

    file:///path or a plain path   used in place; it must exist
    s3://bucket/key                one object, or every object under a prefix (a "folder"), downloaded into a
                                   content-addressed cache
    hf://org/name[@rev][#split]    parsed only: models load with from_pretrained, datasets with `datasets`
    dataset://ID                   the service's own name, resolved by the service before training

The S3 cache lives in $LINGUDISTILL_CACHE_DIR/s3 (default ~/.cache/lingudistill/s3). An entry is named by the
bucket, the key and the ETags of its objects, so a changed object gets a new entry and an unchanged one is
reused. Objects download into a temporary folder that is renamed into place once complete, so a half download
is never seen. The S3 endpoint comes from LINGUDISTILL_S3_ENDPOINT_URL (MinIO, moto), credentials from the
usual AWS variables.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from lingudistill.spec import local_path

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HF_URI = re.compile(
    r"^hf://(?P<repo>[A-Za-z0-9][\w.-]*(?:/[A-Za-z0-9][\w.-]*)?)(?:@(?P<revision>[^#\s]+))?(?:#(?P<split>\S+))?$"
)
# A revision is a commit sha, a branch or a tag (refs/pr/1 and refs/convert/parquet included): slash-separated
# parts of letters, digits, '.', '_' and '-', none starting with '.', and no '..' anywhere, so it can never walk
# out of a cache folder named after it. A split is what `datasets` accepts: words joined by dots.
_HF_REVISION = re.compile(r"^(?!.*\.\.)[A-Za-z0-9_-][\w.-]*(?:/[A-Za-z0-9_-][\w.-]*)*$")
_HF_SPLIT = re.compile(r"^\w+(?:\.\w+)*$")
_HF_REVISION_MAX = 255
_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,62})(?:/(?P<key>.*))?$")
_DOWNLOAD_ATTEMPTS = 3


def uri_scheme(uri: str) -> str:
    """The scheme of `uri` in lower case; "file" for a plain path."""
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else "file"


def fetch(uri: str, *, cache_dir: Path | None = None) -> Path:
    """A local path holding what `uri` names (a file or a folder), downloading S3 objects into the cache."""
    scheme = uri_scheme(uri)
    if scheme == "file":
        path = local_path(uri)
        if not path.exists():
            raise FileNotFoundError(f"{uri}: no such file or folder")
        return path
    if scheme == "s3":
        return _fetch_s3(uri, cache_dir or s3_cache_dir())
    if scheme == "dataset":
        raise ValueError(f"{uri} must be resolved by the service before training")
    if scheme == "hf":
        raise ValueError(f"{uri}: hf:// is not fetched as a file; models load with from_pretrained")
    raise ValueError(f"unsupported URI scheme '{scheme}' in {uri}: use s3://, hf://, dataset://, file:// or a path")


def parse_hf_uri(uri: str) -> tuple[str, str | None, str | None]:
    """hf://org/name[@revision][#split] -> (repo_id, revision, split)."""
    match = _HF_URI.match(uri)
    if not match:
        raise ValueError(f"not a valid hf:// URI: {uri!r}; expected hf://org/name[@revision][#split]")
    revision, split = match.group("revision"), match.group("split")
    if revision is not None and (len(revision) > _HF_REVISION_MAX or not _HF_REVISION.match(revision)):
        raise ValueError(f"not a valid revision in {uri!r}: use a commit sha, a branch or a tag name")
    if split is not None and not _HF_SPLIT.match(split):
        raise ValueError(f"not a valid split in {uri!r}: use a split name such as train or validation")
    return match.group("repo"), revision, split


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/key -> (bucket, key); the key may be empty or a prefix."""
    match = _S3_URI.match(uri)
    if not match:
        raise ValueError(f"not a valid s3:// URI: {uri!r}; expected s3://bucket/key")
    return match.group("bucket"), match.group("key") or ""


def cache_root() -> Path:
    return Path(os.environ.get("LINGUDISTILL_CACHE_DIR") or Path.home() / ".cache" / "lingudistill").expanduser()


def s3_cache_dir() -> Path:
    return cache_root() / "s3"


def s3_client() -> Any:
    import boto3  # imported here: only S3 users pay for it

    return boto3.client("s3", endpoint_url=os.environ.get("LINGUDISTILL_S3_ENDPOINT_URL") or None)


@dataclass(frozen=True)
class _S3Object:
    key: str
    relative: str  # path under the entry's folder; "" for a single object
    etag: str


def _fetch_s3(uri: str, cache_dir: Path) -> Path:
    bucket, key = parse_s3_uri(uri)
    client = s3_client()
    attempts_left = _DOWNLOAD_ATTEMPTS
    while True:
        try:
            return _fetch_s3_entry(client, bucket, key, uri, cache_dir)
        except _ObjectChanged:
            attempts_left -= 1
            if attempts_left == 0:
                raise


def _fetch_s3_entry(client: Any, bucket: str, key: str, uri: str, cache_dir: Path) -> Path:
    objects = _list_objects(client, bucket, key, uri)
    name = PurePosixPath(key.rstrip("/")).name or bucket
    entry = cache_dir / _entry_digest(bucket, key.rstrip("/"), objects)
    if not entry.exists():
        _download_entry(client, bucket, objects, entry, name)
    return entry / name


def _list_objects(client: Any, bucket: str, key: str, uri: str) -> list[_S3Object]:
    """The single object `key`, or else every object under the prefix `key/`."""
    if key and not key.endswith("/"):
        etag = _head_etag(client, bucket, key)
        if etag is not None:
            return [_S3Object(key, "", etag)]
    prefix = key.rstrip("/") + "/" if key else ""
    objects = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if not item["Key"].endswith("/"):  # zero-byte "folder" markers
                relative = _safe_relative(item["Key"][len(prefix) :], uri)
                objects.append(_S3Object(item["Key"], relative, item["ETag"]))
    if not objects:
        raise FileNotFoundError(f"{uri}: no such object or prefix")
    return sorted(objects, key=lambda o: o.relative)


def _head_etag(client: Any, bucket: str, key: str) -> str | None:
    from botocore.exceptions import ClientError

    try:
        return client.head_object(Bucket=bucket, Key=key)["ETag"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def _safe_relative(relative: str, uri: str) -> str:
    parts = PurePosixPath(relative).parts
    if relative.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{uri}: refusing object key {relative!r}, which would land outside the cache entry")
    return relative


def _entry_digest(bucket: str, key: str, objects: list[_S3Object]) -> str:
    identity = json.dumps([bucket, key, [(o.relative, o.etag) for o in objects]])
    return hashlib.sha256(identity.encode()).hexdigest()[:40]


class _ObjectChanged(OSError):
    """An object's ETag changed between listing and downloading it."""


def _download_entry(client: Any, bucket: str, objects: list[_S3Object], entry: Path, name: str) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=entry.parent))
    try:
        for obj in objects:
            dest = staging / name / obj.relative if obj.relative else staging / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            _download(client, bucket, obj, dest)
        try:
            staging.rename(entry)
        except OSError:
            if not entry.exists():  # else another process finished the same entry first: use theirs
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download(client: Any, bucket: str, obj: _S3Object, dest: Path) -> None:
    client.download_file(bucket, obj.key, str(dest))
    # download_file cannot be pinned to an ETag, so check afterwards that we got the version we listed
    if _head_etag(client, bucket, obj.key) != obj.etag:
        raise _ObjectChanged(f"s3://{bucket}/{obj.key} changed while it was downloading")
