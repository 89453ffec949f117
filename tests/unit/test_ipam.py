"""IPAM: subnet validation, picking, overlap with host routes, leases."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from devbox.errors import ConfigError, NetworkError
from devbox.runtime import ipam

N = ipaddress.IPv4Network

ROUTE = """Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth0	00000000	010200C0	0003	0	0	0	00000000	0	0	0
eth0	000200C0	00000000	0001	0	0	0	00FFFFFF	0	0	0
wg0	0000D50A	00000000	0001	0	0	0	0000FFFF	0	0	0
"""


def test_host_routes(tmp_path: Path) -> None:
    f = tmp_path / "route"
    f.write_text(ROUTE)
    assert ipam.host_routes(str(f)) == [(N("192.0.2.0/24"), "eth0"), (N("10.213.0.0/16"), "wg0")]


def test_host_routes_missing_file(tmp_path: Path) -> None:
    assert ipam.host_routes(str(tmp_path / "nope")) == []


def test_pick_subnet_skips_used() -> None:
    assert ipam.pick_subnet([]) == N("10.213.0.0/24")
    assert ipam.pick_subnet([N("10.213.0.0/24"), N("10.213.1.0/25")]) == N("10.213.2.0/24")
    # a host route covering a big range pushes past it
    assert ipam.pick_subnet([N("10.213.0.0/20")]) == N("10.213.16.0/24")


def test_pick_subnet_exhausted() -> None:
    with pytest.raises(NetworkError, match="no free /24"):
        ipam.pick_subnet([N("10.0.0.0/8")])


@pytest.mark.parametrize("text", ["10.213.7.0/24", "172.20.0.0/16", "192.168.50.0/28"])
def test_parse_subnet_ok(text: str) -> None:
    assert str(ipam.parse_subnet(text)) == text


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("10.213.7.1/24", "has host bits set"),
        ("banana", "invalid subnet"),
        ("8.8.8.0/24", "not a private range"),
        ("10.0.0.0/30", "between /8 and /29"),
        ("fd00::/64", "only IPv4"),
        ("127.0.0.0/24", "not a private range"),
    ],
)
def test_parse_subnet_errors(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        ipam.parse_subnet(text)
    assert fragment in e.value.message


def test_check_free_names_the_owner() -> None:
    with pytest.raises(ConfigError, match=r"overlaps 192\.0\.2\.0/24 \(host route via eth0\)"):
        ipam.check_free(N("192.0.2.0/25"), [(N("192.0.2.0/24"), "host route via eth0")])
    ipam.check_free(N("10.213.3.0/24"), [(N("192.0.2.0/24"), "host route via eth0")])


def test_allocate() -> None:
    net = N("10.213.5.0/24")
    assert ipam.gateway(net) == ipaddress.IPv4Address("10.213.5.1")
    assert ipam.allocate(net, []) == "10.213.5.2"
    assert ipam.allocate(net, ["10.213.5.2", "10.213.5.4"]) == "10.213.5.3"


def test_allocate_full() -> None:
    net = N("10.213.5.0/29")  # .1 gateway, .2-.6 hosts
    with pytest.raises(NetworkError, match="is full"):
        ipam.allocate(net, [f"10.213.5.{i}" for i in range(2, 7)])
