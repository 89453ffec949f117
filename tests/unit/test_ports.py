"""Port spec parsing and the port-in-use check (no root needed: binds to 127.0.0.1 high ports)."""

from __future__ import annotations

import socket

import pytest

from devbox.errors import ConfigError, NetworkError
from devbox.runtime.ports import PortSpec, check_port_free, conflicts, parse_port


@pytest.mark.parametrize(
    "spec, want",
    [
        ("80", PortSpec("127.0.0.1", 80, 80, "tcp")),
        ("8080:80", PortSpec("127.0.0.1", 8080, 80, "tcp")),
        ("0.0.0.0:8080:80", PortSpec("0.0.0.0", 8080, 80, "tcp")),
        ("127.0.0.1:5353:53/udp", PortSpec("127.0.0.1", 5353, 53, "udp")),
        ("5353:53/UDP", PortSpec("127.0.0.1", 5353, 53, "udp")),
        ("10.1.2.3:80", PortSpec("10.1.2.3", 80, 80, "tcp")),
        ("9000:9000/tcp", PortSpec("127.0.0.1", 9000, 9000, "tcp")),
    ],
)
def test_parse_port(spec: str, want: PortSpec) -> None:
    assert parse_port(spec) == want


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("", "invalid port spec"),
        ("http", "invalid port spec"),
        ("80:80:80:80", "invalid port spec"),
        ("0:80", "host port 0"),
        ("8080:70000", "container port 70000"),
        ("8080:80/sctp", "tcp or udp"),
        ("300.1.1.1:80:80", "not an IP address"),
        ("[::1]:80:80", "only IPv4"),
    ],
)
def test_parse_port_errors(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_port(spec)
    assert fragment in e.value.message


def test_roundtrip_dict() -> None:
    p = parse_port("0.0.0.0:53:53/udp")
    assert PortSpec.from_dict(p.to_dict()) == p


def test_conflicts() -> None:
    a = parse_port("8080:80")
    assert conflicts([a], [parse_port("8080:81")]) == a
    assert conflicts([a], [parse_port("0.0.0.0:8080:80")]) == a
    assert conflicts([a], [parse_port("8080:80/udp")]) is None
    assert conflicts([a], [parse_port("8081:80")]) is None
    assert conflicts([a, parse_port("8080:90")], []) is not None


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check_port_free_ok() -> None:
    check_port_free(PortSpec("127.0.0.1", _free_port(), 80, "tcp"))
    check_port_free(PortSpec("127.0.0.1", _free_port(socket.SOCK_DGRAM), 53, "udp"))


def test_check_port_in_use_tcp_names_the_process() -> None:
    import os

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(NetworkError) as e:
            check_port_free(PortSpec("127.0.0.1", port, 80, "tcp"))
    msg = e.value.message
    assert msg.startswith(f"host port {port}/tcp is already in use by ")
    assert f"(pid {os.getpid()})" in msg
    assert e.value.hint and str(port + 1) in e.value.hint


def test_check_port_in_use_wildcard_listener_blocks_loopback() -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(NetworkError, match=f"host port {port}/tcp is already in use"):
            check_port_free(PortSpec("127.0.0.1", port, 80, "tcp"))


def test_check_port_in_use_udp() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(NetworkError, match=f"host port {port}/udp is already in use"):
            check_port_free(PortSpec("127.0.0.1", port, 53, "udp"))


def test_check_port_unknown_address() -> None:
    with pytest.raises(NetworkError, match="no such address"):
        check_port_free(PortSpec("203.0.113.77", _free_port(), 80, "tcp"))
