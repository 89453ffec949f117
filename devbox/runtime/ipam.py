"""IP address management: subnets for networks, addresses for containers. Pure (stdlib only).

- Default subnets are /24s carved from POOL (10.213.0.0/16), the first one that overlaps neither a
  route of the host (/proc/net/route: every connected subnet and every route the host uses, so a
  box network never shadows something the host reaches) nor another devbox network.
- The gateway is the first host address (.1); it lives on the bridge.
- Leases: the lowest free host address after the gateway. The caller persists them (in the network's
  state file, under the network lock) keyed by container id, so a container keeps its address.
"""

from __future__ import annotations

import _socket as socket  # inet_ntoa only: socket.py's import costs ~3 ms
import ipaddress
import struct
from collections.abc import Iterable

from devbox.errors import ConfigError, NetworkError

POOL = ipaddress.IPv4Network("10.213.0.0/16")
DEFAULT_PREFIX = 24


def host_routes(path: str = "/proc/net/route") -> list[tuple[ipaddress.IPv4Network, str]]:
    """(destination, interface) of the host's IPv4 routes, default route excluded."""
    out: list[tuple[ipaddress.IPv4Network, str]] = []
    try:
        with open(path) as f:
            lines = f.readlines()[1:]
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        iface, dest_hex, mask_hex = fields[0], fields[1], fields[7]
        dest = socket.inet_ntoa(struct.pack("<I", int(dest_hex, 16)))
        mask = socket.inet_ntoa(struct.pack("<I", int(mask_hex, 16)))
        net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        if net.prefixlen == 0:
            continue
        out.append((net, iface))
    return out


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise ConfigError(f"invalid subnet {text!r}: {e}", hint="use a CIDR such as 10.213.7.0/24") from None
    if net.version != 4:
        raise ConfigError(f"invalid subnet {text!r}: only IPv4 subnets are supported")
    if not 8 <= net.prefixlen <= 29:
        raise ConfigError(
            f"invalid subnet {text!r}: prefix length must be between /8 and /29",
            hint="a /24 gives 253 containers",
        )
    if not net.is_private or net.is_loopback or net.is_link_local or net.is_multicast:
        raise ConfigError(
            f"invalid subnet {text!r}: not a private range",
            hint="use an RFC 1918 range (10/8, 172.16/12, 192.168/16)",
        )
    return net  # type: ignore[return-value]


def check_free(
    net: ipaddress.IPv4Network,
    used: Iterable[tuple[ipaddress.IPv4Network, str]],
) -> None:
    """ConfigError if `net` overlaps any (network, owner description) in `used`."""
    for other, owner in used:
        if net.overlaps(other):
            raise ConfigError(
                f"subnet {net} overlaps {other} ({owner})",
                hint="pick another --subnet, or leave it out to get a free one from " + str(POOL),
            )


def pick_subnet(used: Iterable[ipaddress.IPv4Network], pool: ipaddress.IPv4Network = POOL) -> ipaddress.IPv4Network:
    taken = list(used)
    for cand in pool.subnets(new_prefix=DEFAULT_PREFIX):
        if not any(cand.overlaps(t) for t in taken):
            return cand
    raise NetworkError(
        f"no free /{DEFAULT_PREFIX} left in {pool}",
        hint="remove unused networks (devbox network ls / rm) or pass --subnet",
    )


def gateway(net: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    return net.network_address + 1


def allocate(net: ipaddress.IPv4Network, taken: Iterable[str]) -> str:
    """Lowest free host address after the gateway."""
    used = {ipaddress.IPv4Address(a) for a in taken}
    gw = gateway(net)
    for addr in net.hosts():
        if addr != gw and addr not in used:
            return str(addr)
    raise NetworkError(f"network {net} is full", hint="remove containers or create a network with a bigger --subnet")
