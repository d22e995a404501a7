"""Where a webhook may be delivered (the SSRF policy).

A target is refused when any address its host resolves to is loopback, private, link-local (cloud metadata at
169.254.169.254), reserved, multicast or unspecified, in any spelling: IPv4-mapped or 6to4/Teredo/NAT64 IPv6,
decimal/hex/short IPv4 forms (2130706433, 0x7f.1, 127.1), or a DNS name such as `localhost`. It is checked at
registration and again at every delivery: the name is resolved afresh and the request is sent to the address
that was checked (pinned), so a DNS answer that changes in between (rebinding) cannot redirect it. Redirects are
never followed. `allow_private_network` in the settings lifts the address check (development, tests).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

Resolver = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class TargetRefused(ValueError):
    pass


@dataclass(frozen=True)
class Target:
    url: str  # as registered
    connect_url: str  # the same URL with its host replaced by the checked address
    host_header: str
    sni_hostname: str | None  # https: the certificate is checked against the registered name


def resolve_addresses(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_refused_address(address: str) -> bool:
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None and is_refused_address(str(embedded)):
            return True
    return not ip.is_global or ip.is_multicast or ip.is_unspecified


def _parts(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("the URL must be http:// or https://")
    if parts.username or parts.password:
        raise TargetRefused("credentials in the URL are not allowed; authenticate with the signature")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise TargetRefused("invalid port") from exc
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    return parts.scheme, parts.hostname.rstrip("."), port


def check_target(url: str, allow_private: bool, resolver: Resolver = resolve_addresses) -> Target:
    """The checked, pinned target of `url`; raises TargetRefused with the reason."""
    scheme, host, port = _parts(url)
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        addresses = resolver(host, port)
    if not addresses:
        raise TargetRefused(f"host '{host}' does not resolve")
    refused = [a for a in addresses if is_refused_address(a)]
    if refused and not allow_private:
        raise TargetRefused(f"host '{host}' resolves to a non-public address ({refused[0]})")
    return _pinned(url, scheme, host, port, addresses[0], is_literal=addresses == [host])


def _pinned(url: str, scheme: str, host: str, port: int, address: str, is_literal: bool) -> Target:
    parts = urlsplit(url)
    literal = f"[{address}]" if ":" in address else address
    default_port = port == (443 if scheme == "https" else 80)
    host_header = host if default_port else f"{host}:{port}"
    if ":" in host and not host.startswith("["):
        host_header = f"[{host}]" if default_port else f"[{host}]:{port}"
    connect = urlunsplit((scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
    return Target(url, connect, host_header, host if scheme == "https" and not is_literal else None)
