"""Published ports: parsing of `-p` specs and "is this host port free?" checks.

Pure and cheap to import (stdlib only). The nftables rules that publish a port live in `nft.py`;
`network.attach` calls `check_port_free` before it writes them.

Because devbox is daemonless, a published port is a DNAT rule, not a listening socket: nothing holds
the port on the host. `check_port_free` therefore refuses a port some host process already listens
on (its traffic would silently be stolen by the rule), and names that process where the kernel tells.
"""

from __future__ import annotations

import errno
import os

from devbox.errors import ConfigError, NetworkError
from devbox.record import record
from devbox.textmatch import HEX, only

DEFAULT_HOST_IP = "127.0.0.1"
PROTOS = ("tcp", "udp")

_BRACKETED_IP_CHARS = HEX | frozenset(":.")
_DOTTED_IP_CHARS = frozenset("0123456789.")


def _split_spec(s: str) -> tuple[str | None, str | None, str, str | None] | None:
    r"""The groups (ip, host, ctr, proto) of this regex (re.VERBOSE) in `s`, or None if it does not match:
        ^(?:(?P<ip>\[[0-9a-fA-F:.]+\]|[0-9]*\.[0-9.]*):)?   # optional host address
        (?:(?P<host>\d+):)?                         # optional host port
        (?P<ctr>\d+)                                # container port
        (?:/(?P<proto>[a-zA-Z]+))?$
    Plain string code: every `run` imports this module, and `re` costs ~9 ms to import. `\d` is any
    Unicode digit (str.isdecimal), as int() reads them."""
    body, slash, proto = s.partition("/")
    if slash and not (proto.isascii() and proto.isalpha()):
        return None
    ip = None
    if body.startswith("["):
        end = body.find("]")
        if end < 2 or body[end + 1 : end + 2] != ":" or not only(body[1:end], _BRACKETED_IP_CHARS):
            return None
        ip, body = body[: end + 1], body[end + 2 :]
    else:
        first, colon, rest = body.partition(":")
        if colon and "." in first and only(first, _DOTTED_IP_CHARS):
            ip, body = first, rest
    ports = body.split(":")
    if len(ports) > 2 or not all(p.isdecimal() for p in ports):
        return None
    return ip, (ports[0] if len(ports) == 2 else None), ports[-1], (proto if slash else None)


@record(frozen=True)
class PortSpec:
    host_ip: str
    host_port: int
    container_port: int
    proto: str  # "tcp" | "udp"

    def __str__(self) -> str:
        return f"{self.host_ip}:{self.host_port}:{self.container_port}/{self.proto}"

    def to_dict(self) -> dict[str, object]:
        return {
            "host_ip": self.host_ip,
            "host_port": self.host_port,
            "container_port": self.container_port,
            "proto": self.proto,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> PortSpec:
        return cls(str(d["host_ip"]), int(d["host_port"]), int(d["container_port"]), str(d["proto"]))  # type: ignore[call-overload]

    def overlaps(self, other: PortSpec) -> bool:
        """Would both rules claim the same packets? (same proto and port, addresses that meet)"""
        if self.proto != other.proto or self.host_port != other.host_port:
            return False
        return "0.0.0.0" in (self.host_ip, other.host_ip) or self.host_ip == other.host_ip


def _port(value: str, what: str, spec: str) -> int:
    n = int(value)
    if not 1 <= n <= 65535:
        raise ConfigError(f"invalid port spec {spec!r}: {what} {n} is not in 1-65535")
    return n


def parse_port(spec: str) -> PortSpec:
    """Parse `[IP:]HOST:CONTAINER[/udp]`; a bare `80` means 80:80. The host address defaults to
    127.0.0.1 (reachable as localhost:HOST from the host only); `0.0.0.0` exposes it on every
    host address."""
    m = _split_spec(spec.strip())
    if not m:
        raise ConfigError(
            f"invalid port spec {spec!r}",
            hint="use [IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp], e.g. 8080:80 or 0.0.0.0:53:53/udp",
        )
    m_ip, m_host, m_ctr, m_proto = m
    proto = (m_proto or "tcp").lower()
    if proto not in PROTOS:
        raise ConfigError(f"invalid port spec {spec!r}: protocol must be tcp or udp, not {m_proto!r}")
    ctr = _port(m_ctr, "container port", spec)
    host = _port(m_host, "host port", spec) if m_host else ctr
    host_ip = DEFAULT_HOST_IP
    if m_ip:
        raw = m_ip.strip("[]")
        import ipaddress

        try:
            addr = ipaddress.ip_address(raw)
        except ValueError:
            raise ConfigError(f"invalid port spec {spec!r}: {raw!r} is not an IP address") from None
        if addr.version != 4:
            raise ConfigError(
                f"invalid port spec {spec!r}: only IPv4 host addresses are supported",
                hint="use 127.0.0.1 (the default), 0.0.0.0 or one of the host's IPv4 addresses",
            )
        host_ip = str(addr)
    return PortSpec(host_ip, host, ctr, proto)


# -- who holds a port? ---------------------------------------------------------------------------

_TCP_LISTEN = "0A"


def _proc_net_inodes(port: int, proto: str) -> set[int]:
    """Inodes of sockets bound to `port` (TCP: listening ones) from /proc/net/{tcp,udp}{,6}."""
    inodes: set[int] = set()
    for name in (proto, proto + "6"):
        try:
            with open(f"/proc/net/{name}") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            local, state, inode = fields[1], fields[3], fields[9]
            if int(local.rsplit(":", 1)[1], 16) != port:
                continue
            if proto == "tcp" and state != _TCP_LISTEN:
                continue
            if inode != "0":
                inodes.add(int(inode))
    return inodes


def _owners(inodes: set[int]) -> list[tuple[int, str]]:
    """(pid, comm) of processes holding any of the socket inodes, by scanning /proc/*/fd."""
    if not inodes:
        return []
    wanted = {f"socket:[{i}]" for i in inodes}
    found: list[tuple[int, str]] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fd_dir = f"/proc/{entry.name}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target in wanted:
                try:
                    with open(f"/proc/{entry.name}/comm") as f:
                        comm = f.read().strip()
                except OSError:
                    comm = "?"
                found.append((int(entry.name), comm))
                break
    return sorted(found)


def port_owners(port: int, proto: str) -> list[tuple[int, str]]:
    return _owners(_proc_net_inodes(port, proto))


def _bind_test(p: PortSpec) -> OSError | None:
    import _socket  # socket.py's import costs ~3 ms; a bind needs only the C module

    kind = _socket.SOCK_STREAM if p.proto == "tcp" else _socket.SOCK_DGRAM
    s = _socket.socket(_socket.AF_INET, kind)
    try:
        if p.proto == "tcp":
            # Like a server would: TIME_WAIT leftovers must not count as "in use".
            s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        try:
            s.bind((p.host_ip, p.host_port))
        except OSError as e:
            return e
    finally:
        s.close()
    return None


def check_port_free(p: PortSpec) -> None:
    """Raise NetworkError if a host process already uses `p`'s host port (or the address cannot be
    used at all). Checked with a real bind, then /proc/net + /proc/*/fd to name the holder."""
    err = _bind_test(p)
    if err is None:
        return
    where = f"{p.host_port}/{p.proto}"
    if err.errno == errno.EADDRINUSE:
        owners = port_owners(p.host_port, p.proto)
        by = ""
        if owners:
            by = " by " + ", ".join(f"{comm} (pid {pid})" for pid, comm in owners)
        raise NetworkError(
            f"host port {where} is already in use{by}",
            hint=f"stop that process or publish on another host port, e.g. -p {p.host_port + 1}:{p.container_port}"
            + ("/udp" if p.proto == "udp" else ""),
        )
    if err.errno == errno.EADDRNOTAVAIL:
        raise NetworkError(
            f"cannot publish {where} on {p.host_ip}: the host has no such address",
            hint="use 127.0.0.1, 0.0.0.0 or one of the host's addresses (see `ip addr`)",
        )
    if err.errno == errno.EACCES:
        # Only an unprivileged bind below 1024 lands here; devbox runs as root, so note and go on.
        return
    raise NetworkError(f"cannot check host port {where} on {p.host_ip}: {os.strerror(err.errno or 0)}")


def conflicts(new: list[PortSpec], existing: list[PortSpec]) -> PortSpec | None:
    """The first of `new` that overlaps one of `existing` (or another of `new`)."""
    seen: list[PortSpec] = list(existing)
    for p in new:
        for q in seen:
            if p.overlaps(q):
                return p
        seen.append(p)
    return None

