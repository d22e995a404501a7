"""Which URIs a job spec may name, checked at submission.

No URI may reach a loopback, private, link-local (cloud metadata) or otherwise internal address unless
settings.allow_private_network: host names are resolved and every address is checked, including IPv4-mapped
IPv6 and numeric forms such as 2130706433 or 0x7f.1.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from lingudistill.spec import JobSpec, local_path
from lingudistill.uris import parse_hf_uri, parse_s3_uri, uri_scheme
from service.errors import FieldError
from service.settings import Settings

Resolver = Callable[[str], list[str]]


@dataclass(frozen=True)
class DatasetRef:
    kind: str  # training or evaluation
    status: str  # ready or invalid


DatasetLookup = Callable[[str], DatasetRef | None]  # the tenant's dataset by id, or None
NETWORK_SCHEMES = {"http", "https", "ftp", "ws", "wss"}


def resolve_host(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        return []
    return sorted({info[4][0] for info in infos})


# The roles of JobSpec.uri_fields() a dataset:// may fill; the dataset's kind must be the role (a mixture source
# trains, a suite evaluates). A model or a harness folder is never a dataset.
DATASET_KINDS = {"training", "evaluation"}


def is_internal_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _numeric_host(host: str) -> str | None:
    """A host written as a number (2130706433, 0x7f000001) as an IP address string."""
    try:
        return str(ipaddress.ip_address(int(host, 0)))
    except ValueError:
        return None


class UriPolicy:
    def __init__(self, settings: Settings, find_dataset: DatasetLookup, resolver: Resolver | None = None) -> None:
        self.settings = settings
        self.find_dataset = find_dataset
        self.resolver = resolver or resolve_host

    def violations(self, spec: JobSpec) -> list[FieldError]:
        errors = []
        for field in spec.uri_fields():
            problem = self.check(field.uri, dataset_kind=field.role if field.role in DATASET_KINDS else None)
            if problem:
                errors.append(FieldError(loc=["body", *field.path], msg=f"{field.uri!r}: {problem}"))
        return errors

    def check(self, uri: str, dataset_kind: str | None = "training") -> str | None:
        """Why `uri` is refused, or None. A dataset:// must be a ready dataset of `dataset_kind` (None: no dataset
        may be named there), so a spec the worker would fail on is refused at submission."""
        scheme = uri_scheme(uri)
        if scheme not in self.settings.allowed_schemes:
            return f"scheme '{scheme}' is not allowed (allowed: {', '.join(self.settings.allowed_schemes)})"
        if scheme == "dataset":
            return self._dataset(uri, dataset_kind)
        checker = {"s3": self._s3, "hf": self._hf, "file": self._local}.get(scheme)
        if checker is not None:
            return checker(uri)
        return self._network(uri)

    def _dataset(self, uri: str, kind: str | None) -> str | None:
        dataset_id = uri.removeprefix("dataset://").strip("/")
        dataset = self.find_dataset(dataset_id) if dataset_id else None
        if dataset is None:
            return "no such dataset"
        if kind is None:
            return "a dataset cannot be used as a model"
        if dataset.kind != kind:
            return f"this field needs a dataset of kind '{kind}', not '{dataset.kind}' (upload it with kind={kind})"
        if dataset.status != "ready":
            return "the dataset is invalid (see its problems); fix it and upload it again"
        return None

    def _s3(self, uri: str) -> str | None:
        try:
            bucket, _ = parse_s3_uri(uri)
        except ValueError as exc:
            return str(exc)
        allowed = self.settings.allowed_s3_buckets
        return None if allowed is None or bucket in allowed else f"bucket '{bucket}' is not allowed"

    def _hf(self, uri: str) -> str | None:
        try:
            repo, _, _ = parse_hf_uri(uri)
        except ValueError as exc:
            return str(exc)
        allowed = self.settings.allowed_hf_orgs
        org = repo.split("/", 1)[0] if "/" in repo else ""
        return None if allowed is None or org in allowed else f"organisation '{org or repo}' is not allowed"

    def _local(self, uri: str) -> str | None:
        try:  # '~user' with no such user, NUL bytes, lone surrogates: refused, not a 500 (Schemathesis, issue 9)
            path = local_path(uri)
            if not path.is_absolute():
                return "a local path must be absolute"
            resolved = Path(path).resolve()
        except (RuntimeError, ValueError, OSError) as exc:
            return f"not a usable local path: {exc}"
        roots = [Path(r).resolve() for r in self.settings.allowed_local_roots]
        if any(resolved.is_relative_to(root) for root in roots):
            return None
        allowed = ", ".join(map(str, roots)) or "nowhere: none is configured"
        return f"local paths are allowed only under the server's LINGUDISTILL_ALLOWED_LOCAL_ROOTS ({allowed})"

    def _network(self, uri: str) -> str | None:
        host = urlparse(uri).hostname
        if not host:
            return "no host in URI"
        if self.settings.allow_private_network:
            return None
        numeric = _numeric_host(host)
        addresses = [numeric] if numeric else self._addresses(host)
        if not addresses:
            return f"host '{host}' does not resolve"
        internal = [a for a in addresses if is_internal_address(a)]
        return f"host '{host}' resolves to a non-public address ({internal[0]})" if internal else None

    def _addresses(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            return self.resolver(host)
