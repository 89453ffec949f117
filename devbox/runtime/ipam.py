"""IP address management: subnets for networks, addresses for containers. Pure (stdlib only).

- Default subnets are /24s carved from POOL (10.213.0.0/16), the first one that overlaps neither a
  route of the host (/proc/net/route: every connected subnet and every route the host uses, so a
  box network never shadows something the host reaches) nor another devbox network.
- The gateway is the first host address (.1); it lives on the bridge.
- Leases: the lowest free host address after the gateway. The caller persists them (in the network's
  state file, under the network lock) keyed by container id, so a container keeps its address.
"""

from __future__ import annotations

import _socket as socket  # inet_* only: socket.py's import costs ~3 ms
import struct

from devbox.errors import ConfigError, NetworkError

TYPE_CHECKING = False  # typing/collections.abc cost import time; only type checkers need them here
if TYPE_CHECKING:
    import ipaddress
    from collections.abc import Iterable

# `import ipaddress` costs ~3-4 ms (it pulls in functools and more). `devbox run` on an existing
# network only needs allocate(), which works on ints, so ipaddress is imported lazily by the functions
# that create networks (host_routes, parse_subnet, check_free, pick_subnet). POOL (the IPv4Network of
# POOL_CIDR) is still an attribute of this module: module-level __getattr__ builds it on first access.
POOL_CIDR = "10.213.0.0/16"
DEFAULT_PREFIX = 24


def __getattr__(name: str) -> object:
    if name == "POOL":
        return _pool()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _pool() -> ipaddress.IPv4Network:
    pool = globals().get("POOL")
    if pool is None:
        import ipaddress

        pool = globals()["POOL"] = ipaddress.IPv4Network(POOL_CIDR)
    return pool


def host_routes(path: str = "/proc/net/route") -> list[tuple[ipaddress.IPv4Network, str]]:
    """(destination, interface) of the host's IPv4 routes, default route excluded."""
    import ipaddress

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
    import ipaddress

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
                hint="pick another --subnet, or leave it out to get a free one from " + POOL_CIDR,
            )


def pick_subnet(
    used: Iterable[ipaddress.IPv4Network], pool: ipaddress.IPv4Network | None = None
) -> ipaddress.IPv4Network:
    """The first /DEFAULT_PREFIX of `pool` (default POOL) that overlaps nothing in `used`."""
    if pool is None:
        pool = _pool()
    taken = list(used)
    for cand in pool.subnets(new_prefix=DEFAULT_PREFIX):
        if not any(cand.overlaps(t) for t in taken):
            return cand
    raise NetworkError(
        f"no free /{DEFAULT_PREFIX} left in {pool}",
        hint="remove unused networks (devbox network ls / rm) or pass --subnet",
    )


def gateway(net: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The bridge's address: the first host address. Used by network creation only (an existing
    network stores its gateway as a string)."""
    return net.network_address + 1


def _ip_int(text: str) -> int:
    """Dotted quad -> int, as strict as ipaddress.IPv4Address (inet_pton, unlike inet_aton, rejects
    short forms like "127.1" and octets with leading zeros)."""
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError):  # ValueError: embedded NUL, unencodable surrogates
        raise ValueError(f"{text!r} does not appear to be an IPv4 address") from None


def allocate(net: ipaddress.IPv4Network | str, taken: Iterable[str]) -> str:
    """Lowest free host address after the gateway (network address + 1) of `net`, an IPv4Network or
    its "a.b.c.d/prefix" string. Host addresses are those of IPv4Network.hosts(): network+1 ..
    broadcast-1 (/31: both addresses, /32: the one). Addresses in `taken` outside `net` are ignored.

    Integer arithmetic: this runs on every `devbox run --network`, which must not import ipaddress.
    """
    text = str(net)
    addr, sep, plen = text.partition("/")
    if not sep or not plen.isascii() or not plen.isdigit() or not 0 <= int(plen) <= 32:
        raise ValueError(f"invalid IPv4 network {text!r}")
    prefix = int(plen)
    size = 1 << (32 - prefix)
    first = _ip_int(addr)
    if first & (size - 1):
        raise ValueError(f"{text!r} has host bits set")
    last = first + size - 1
    gw = first + 1
    lo, hi = (first + 1, last - 1) if prefix < 31 else (first, last)
    used = {_ip_int(str(a)) for a in taken}
    cand = lo
    while cand <= hi:
        if cand != gw and cand not in used:
            return socket.inet_ntoa(cand.to_bytes(4, "big"))
        cand += 1
    raise NetworkError(f"network {text} is full", hint="remove containers or create a network with a bigger --subnet")
