"""The SSRF guard for webhook callbacks: which URLs and addresses batchgate may POST to.

Refused: schemes other than http/https, credentials in the URL, loopback, private (RFC 1918, ULA), link-local
(169.254.0.0/16 with the cloud metadata address, fe80::/10), shared/CGNAT (100.64.0.0/10), multicast, unspecified,
broadcast, reserved and documentation ranges (anything `ipaddress` says is not globally reachable), IPv4 addresses
hidden inside IPv6 (IPv4-mapped, NAT64, 6to4, Teredo), and cloud-metadata host names. Names on the configured
allow-list (exact host names or IP literals) are let through.

A URL is checked when the request arrives and again before every delivery attempt: the sender resolves the name
then, checks every address, and connects to the checked address itself (see `webhooks/sender.py`), so a DNS answer
that changes between check and connect (rebinding) cannot reach an internal address.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)
NOT_PUBLIC_V4 = tuple(
    ipaddress.IPv4Network(network)
    for network in ("0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "240.0.0.0/4")
)
NAT64_PREFIXES = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT = 2.0


class UnsafeCallback(ValueError):
    """A callback URL batchgate will not call; the message says why."""


@dataclass(frozen=True, slots=True)
class CallbackTarget:
    """A parsed callback URL: where to connect and what to ask for."""

    url: str
    scheme: str
    host: str  # lower-cased, no brackets, no trailing dot
    port: int
    target: str  # path and query, as sent on the request line
    literal: IPAddress | None  # the host when it is an IP address
    allowed: bool  # on the allow-list: the address checks are skipped

    @property
    def host_header(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return shown if self.port == default else f"{shown}:{self.port}"


def address_problem(address: IPAddress) -> str | None:
    """Why an address must not be called (None when it is a public unicast address)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            problem = address_problem(embedded)
            return f"{problem} (embedded in an IPv6 address)" if problem else None
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local (cloud metadata lives here)", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    )
    for label, hit in checks:
        if hit:
            return f"a {label} address"
    if isinstance(address, ipaddress.IPv4Address) and any(address in network for network in NOT_PUBLIC_V4):
        return "a shared (CGNAT), protocol-assignment (cloud metadata) or reserved address"
    if not address.is_global:
        return "not a globally reachable address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    for prefix in NAT64_PREFIXES:
        if address in prefix:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(address))
    return None


def parse_literal(host: str) -> IPAddress | None:
    """The host as an IP address, also in the legacy IPv4 spellings resolvers accept (127.1, 0x7f.1, 2130706433)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefx." for c in host) and any(c.isdigit() for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def ascii_host(host: str) -> str:
    """The host as the resolver will see it: IDNA (RFC 3490, the codec `getaddrinfo` applies) maps full-width
    dots and digits and other compatibility forms to ASCII (`127。0。0。1` is 127.0.0.1), so the address checks
    run on what would be called. Raises UnsafeCallback for a name IDNA refuses (an empty or over-long label)."""
    if not host:
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise UnsafeCallback("the callback host is not a valid host name") from None


def parse_callback(url: str, allow_hosts: Iterable[str]) -> CallbackTarget:
    """Check a callback URL's shape and (for IP literals and well-known names) its host; raises UnsafeCallback."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeCallback(f"the callback URL is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise UnsafeCallback("the callback URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeCallback(f"the callback URL is not valid: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeCallback("the callback URL must use http or https")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UnsafeCallback("the callback URL must not carry credentials")
    host = ascii_host(parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UnsafeCallback("the callback URL has no host")
    allowed = host in {entry.strip().rstrip(".").lower().strip("[]") for entry in allow_hosts}
    literal = parse_literal(host)
    target = CallbackTarget(
        url=url,
        scheme=scheme,
        host=str(literal) if literal is not None and not allowed else host,
        port=port or (443 if scheme == "https" else 80),
        target=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
        literal=literal,
        allowed=allowed,
    )
    if allowed:
        return target
    if literal is not None:
        problem = address_problem(literal)
        if problem:
            raise UnsafeCallback(f"the callback host {host} is {problem}")
    elif host in METADATA_HOSTS or host == "localhost" or host.endswith((".localhost", ".internal")):
        raise UnsafeCallback(f"the callback host {host} is an internal or cloud-metadata name")
    return target


async def resolve(target: CallbackTarget, *, within: float = RESOLVE_TIMEOUT) -> list[IPAddress]:
    """The target's addresses, every one checked (unless allow-listed); raises UnsafeCallback or OSError."""
    if target.literal is not None:
        addresses = [target.literal]
    else:
        loop = asyncio.get_running_loop()
        infos = await asyncio.wait_for(
            loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM), timeout=within
        )
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
    if not addresses:
        raise OSError(f"{target.host} has no address")
    if not target.allowed:
        for address in addresses:
            problem = address_problem(address)
            if problem:
                raise UnsafeCallback(f"the callback host {target.host} resolves to {address}, {problem}")
    return addresses


async def vet_callback(url: str, allow_hosts: Iterable[str]) -> CallbackTarget:
    """The request-time check: shape and literal addresses always; a name is resolved too, and refused when it
    resolves to a blocked address. A name that does not resolve right now is accepted (DNS may be down for a
    moment); the delivery-time check decides then."""
    target = parse_callback(url, allow_hosts)
    with contextlib.suppress(OSError, TimeoutError):
        await resolve(target)
    return target
