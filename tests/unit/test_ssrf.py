"""The SSRF guard: which callback URLs and addresses are refused."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from proxy.delivery.ssrf import UnsafeCallback, address_problem, parse_callback, resolve

BLOCKED = [
    "127.0.0.1", "127.255.255.254", "0.0.0.0", "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255",
    "192.168.1.1", "169.254.169.254", "169.254.0.1", "100.64.0.1", "100.127.255.254", "224.0.0.1",
    "239.255.255.250", "255.255.255.255", "240.0.0.1", "192.0.0.192", "198.18.0.1", "192.0.2.1",
    "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1", "ff0e::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "::ffff:7f00:1",
    "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "2002:7f00:1::", "2002:a9fe:a9fe::1", "::127.0.0.1", "2001:db8::1",
]  # fmt: skip
PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", BLOCKED)
def test_internal_addresses_are_refused(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is not None
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(UnsafeCallback):
        parse_callback(f"https://{host}/hook", [])


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None
    host = f"[{address}]" if ":" in address else address
    assert parse_callback(f"https://{host}:8443/hook?x=1", []).port == 8443


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/hook", "http://LOCALHOST./hook", "http://api.localhost/hook",
        "http://metadata.google.internal/computeMetadata/v1/", "http://metadata/", "http://instance-data/latest",
        "http://2130706433/", "http://0x7f000001/", "http://127.1/", "http://0177.0.0.1/", "http://017700000001/",
        "ftp://example.com/hook", "file:///etc/passwd", "gopher://example.com/", "javascript:alert(1)",
        "https://user:pass@example.com/hook", "https://user@example.com/hook", "https:///nohost",
        "https://example.com:99999/", "https://exa mple.com/", "https://example.com/\r\nX-Injected: 1",
    ],
)  # fmt: skip
def test_unsafe_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeCallback):
        parse_callback(url, [])


def test_the_allow_list_opens_named_hosts_only() -> None:
    target = parse_callback("http://127.0.0.1:9000/hook", ["127.0.0.1", "receiver.local"])
    assert target.allowed
    assert target.host_header == "127.0.0.1:9000"
    assert parse_callback("http://Receiver.Local/hook", ["receiver.local"]).allowed
    with pytest.raises(UnsafeCallback):
        parse_callback("http://127.0.0.2/hook", ["127.0.0.1"])
    with pytest.raises(UnsafeCallback):
        parse_callback("http://[::1]/hook", ["127.0.0.1"])


async def test_names_are_checked_after_resolution() -> None:
    """A name that is not on the allow-list is refused when any address it resolves to is internal."""
    name = socket.gethostname()
    try:
        addresses = await resolve(parse_callback(f"http://{name}/hook", [name]))
    except OSError:
        pytest.skip("this host's name does not resolve")
    if all(address_problem(address) is None for address in addresses):
        pytest.skip("this host has a public address")
    with pytest.raises(UnsafeCallback, match="resolves to"):
        await resolve(parse_callback(f"http://{name}/hook", []))


async def test_allow_listed_names_resolve_to_their_addresses() -> None:
    addresses = await resolve(parse_callback("http://localhost:9/hook", ["localhost"]))
    assert {str(address) for address in addresses} <= {"127.0.0.1", "::1"}
    assert await resolve(parse_callback("http://8.8.8.8/hook", [])) == [ipaddress.ip_address("8.8.8.8")]
