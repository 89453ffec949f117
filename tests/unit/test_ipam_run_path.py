"""The run path (ipam.allocate, /etc/hosts ordering, resolv.conf loopback test) works without ipaddress
and gives exactly what the ipaddress-based code gave."""

from __future__ import annotations

import ipaddress
import itertools
import random
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from devbox.errors import NetworkError
from devbox.runtime import ipam, network

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / ".venv" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


# -- allocate ---------------------------------------------------------------------------------------


def old_allocate(net: ipaddress.IPv4Network, taken: Iterable[str]) -> str:
    """ipam.allocate before it stopped using ipaddress (verbatim, gateway() inlined)."""
    used = {ipaddress.IPv4Address(a) for a in taken}
    gw = net.network_address + 1
    for addr in net.hosts():
        if addr != gw and addr not in used:
            return str(addr)
    raise NetworkError(f"network {net} is full", hint="remove containers or create a network with a bigger --subnet")


def outcome(fn, net, taken):  # type: ignore[no-untyped-def]
    try:
        return fn(net, taken)
    except NetworkError as e:
        return ("full", e.message, e.hint)


PRIVATE = [ipaddress.IPv4Network(c) for c in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]


def random_subnet(rng: random.Random, lo: int = 8, hi: int = 29) -> ipaddress.IPv4Network:
    base = rng.choice(PRIVATE)
    prefix = rng.randint(max(lo, base.prefixlen), hi)
    size = 1 << (32 - prefix)
    start = int(base.network_address) + rng.randrange(base.num_addresses // size) * size
    return ipaddress.IPv4Network((start, prefix))


def random_taken(rng: random.Random, net: ipaddress.IPv4Network) -> list[str]:
    first, n = int(net.network_address), net.num_addresses
    taken: list[int] = []
    run = rng.choice([0, 0, 1, 2, 5, rng.randint(0, min(n, 300))])  # a block from the bottom
    taken += range(first, first + min(run, n))
    taken += [first + rng.randrange(n) for _ in range(rng.randint(0, 20))]  # anywhere, incl. gw/bcast
    taken += [first - 1 - rng.randrange(1000), first + n + rng.randrange(1000)]  # outside the network
    rng.shuffle(taken)
    return [str(ipaddress.IPv4Address(a % 2**32)) for a in taken]


def test_allocate_matches_old_on_random_subnets() -> None:
    rng = random.Random(1234)
    for _ in range(3000):
        net = random_subnet(rng)
        taken = random_taken(rng, net)
        want = outcome(old_allocate, net, taken)
        assert outcome(ipam.allocate, net, taken) == want, (net, taken)
        assert outcome(ipam.allocate, str(net), taken) == want, (net, taken)


def test_allocate_matches_old_on_full_and_nearly_full_networks() -> None:
    rng = random.Random(99)
    for _ in range(400):
        net = random_subnet(rng, 22, 29)
        hosts = [str(h) for h in net.hosts()]
        for taken in (hosts, hosts[1:], hosts[:-1], rng.sample(hosts, len(hosts) - 1), hosts + [str(net[0])]):
            taken = list(taken)
            rng.shuffle(taken)
            want = outcome(old_allocate, net, taken)
            assert outcome(ipam.allocate, net, taken) == want, (net, len(taken))
            assert outcome(ipam.allocate, str(net), taken) == want, (net, len(taken))


@pytest.mark.parametrize("cidr", ["10.1.2.0/30", "10.1.2.4/31", "10.1.2.7/32", "10.0.0.0/8", "192.168.255.248/29"])
def test_allocate_matches_old_on_edge_prefixes(cidr: str) -> None:
    net = ipaddress.IPv4Network(cidr)
    addrs = [str(a) for a in itertools.islice(net, 8)]
    for k in range(len(addrs) + 1 if net.num_addresses <= 8 else 4):
        taken = addrs[:k]
        assert outcome(ipam.allocate, net, taken) == outcome(old_allocate, net, taken)
        assert outcome(ipam.allocate, cidr, taken) == outcome(old_allocate, net, taken)


@pytest.mark.parametrize("bad", ["10.0.0.0", "10.0.0.1/24", "10.0.0.0/33", "10.0.0.0/x", "10.1/16", "a/8"])
def test_allocate_rejects_invalid_subnets(bad: str) -> None:
    with pytest.raises(ValueError):
        ipam.allocate(bad, [])


@pytest.mark.parametrize("bad", ["10.0.0.2.", "10.0.2", "10.0.0.02", "", "x"])
def test_allocate_rejects_invalid_taken(bad: str) -> None:
    with pytest.raises(ValueError):
        ipam.allocate("10.0.0.0/24", [bad])
    with pytest.raises(ValueError):
        old_allocate(ipaddress.IPv4Network("10.0.0.0/24"), [bad])


def test_pool_is_still_an_ipv4network() -> None:
    assert ipam.POOL == ipaddress.IPv4Network("10.213.0.0/16") == ipaddress.IPv4Network(ipam.POOL_CIDR)
    assert ipam.POOL is ipam.POOL
    assert ipam.pick_subnet([]) in ipam.POOL.subnets(new_prefix=24)
    with pytest.raises(AttributeError):
        ipam.NOPE  # noqa: B018


# -- /etc/hosts ordering ----------------------------------------------------------------------------


def test_hosts_order_is_numeric() -> None:
    rng = random.Random(7)
    for _ in range(200):
        net = random_subnet(rng, 8, 29)
        ips = {str(net[rng.randrange(net.num_addresses)]) for _ in range(rng.randint(1, 30))}
        leases = {f"c{i}": {"ip": ip, "name": f"h{i}", "aliases": []} for i, ip in enumerate(ips)}
        own = {"ip": "10.255.255.254", "name": "me", "aliases": []}
        text = network._render_hosts("me", {"name": "n", "leases": leases}, own)
        got = [ln.split("\t")[0] for ln in text.splitlines()[4:]]
        assert got == sorted(ips, key=ipaddress.IPv4Address)


# -- resolv.conf: _is_loopback ----------------------------------------------------------------------


def old_is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


FIXED = [
    "", " ", "%", "%eth0", "127.0.0.1", "127.0.0.53", "127.255.255.255", "127.1", "127.0.1", "127",
    "0x7f.0.0.1", "0177.0.0.1", "127.0.0.01", "127.00.0.1", "127.0.0.256", "127.0.0.1.", ".127.0.0.1",
    "127.0.0.1 ", " 127.0.0.1", "127.0.0.1%eth0", "127.0.0.1%", "128.0.0.1", "126.255.255.255",
    "0.0.0.0", "255.255.255.255", "10.0.0.1", "1.1.1.1", "8.8.8.8", "127.-0.0.1", "127.+0.0.1",
    "::1", "::01", "::0001", "::00001", "0::1", "0:0:0:0:0:0:0:1", "0000:0000:0000:0000:0000:0000:0000:0001",
    "0:0:0:0:0:0:0:0:1", "::1%eth0", "::1%", "::1%%", "fe80::1%eth0", "::", "::0", "::2", "1::",
    "::1:0", "::ffff:127.0.0.1", "::FFFF:127.0.0.1", "::ffff:7f00:1", "::127.0.0.1", "::0.0.0.1",
    "0:0:0:0:0:0:0.0.0.1", "::0.0.0.01", "::00.0.0.1", "::0.0.1", ":::1", ":1", "::1:", "1::1::1",
    "0:0:0:0:0:0:0::1", "::0:0:0:0:0:0:0:1", "::0:0:0:0:0:0:1", "0:0:0:0:0:0::1", "[::1]", "::1/128",
    "::g", "::1 ", " ::1", "0x0::1", "::-1", "::+1", "::ABCD", "::aBcD:1", "FE80::1", "FEC0::1",
    "\x00", "127.0.0.1\x00", "::1\x00", "\ud800", "::1\ud800", "１２７.0.0.1", "127.0.0.١",
    "::١", "0:0:0:0:0:0:0:1:", ":0:0:0:0:0:0:0:1", "0:0:0:0:0:0:0:1.2.3.4", "::1.2.3.4:1", "1.2.3.4::",
]


def random_v4(rng: random.Random) -> str:
    octets = [rng.choice([127, 0, 255, rng.randrange(256)]) for _ in range(4)]
    return ".".join(map(str, octets))


def random_v6(rng: random.Random) -> str:
    if rng.random() < 0.3:
        ip = ipaddress.IPv6Address(1 if rng.random() < 0.5 else rng.choice([0, 2, 2**128 - 1, 2**32 - 1]))
    elif rng.random() < 0.2:
        ip = ipaddress.IPv6Address(f"::ffff:{random_v4(rng)}")
    else:
        ip = ipaddress.IPv6Address(rng.getrandbits(rng.choice([8, 16, 64, 128])))
    s = rng.choice([ip.compressed, ip.exploded, ip.exploded.replace(":0000", ":0")])
    return s.upper() if rng.random() < 0.3 else s


ALPHABET = "0123456789abcdefABCDEFx:.% -"


def mutate(rng: random.Random, s: str) -> str:
    chars = list(s)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(3)
        i = rng.randrange(len(chars) + 1)
        if op == 0:
            chars.insert(i, rng.choice(ALPHABET))
        elif chars and op == 1:
            del chars[min(i, len(chars) - 1)]
        elif chars:
            chars[min(i, len(chars) - 1)] = rng.choice(ALPHABET)
    return "".join(chars)


def test_is_loopback_fixed_cases() -> None:
    for s in FIXED:
        assert network._is_loopback(s) == old_is_loopback(s), s
    assert network._is_loopback("127.0.0.53") and network._is_loopback("::1%lo")
    assert not network._is_loopback("127.1") and not network._is_loopback("")


def test_is_loopback_matches_ipaddress_on_random_strings() -> None:
    rng = random.Random(42)
    seen_true = 0
    for _ in range(40000):
        base = rng.choice([random_v4(rng), random_v6(rng), rng.choice(FIXED)])
        s = base if rng.random() < 0.4 else mutate(rng, base)
        if rng.random() < 0.1:
            s += rng.choice(["%eth0", "%", "%lo%x", "%1"])
        want = old_is_loopback(s)
        seen_true += want
        assert network._is_loopback(s) == want, repr(s)
    assert seen_true > 1000  # the loopback side was exercised too


# -- no ipaddress on the run path -------------------------------------------------------------------


def test_run_path_does_not_import_ipaddress(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.53\nnameserver ::1\nnameserver 192.0.2.1\n")
    code = f"""
import sys
sys.path[:0] = [{str(REPO)!r}, {str(SITE)!r}]
from devbox.runtime import ipam, network
assert ipam.allocate("10.213.5.0/24", ["10.213.5.2"]) == "10.213.5.3"
net = {{"name": "n", "leases": {{"a": {{"ip": "10.0.0.10"}}, "b": {{"ip": "10.0.0.9"}}}}}}
network._render_hosts("c", net, {{"ip": "10.0.0.2", "name": "c"}})
assert network._is_loopback("::1") and network._is_loopback("127.0.0.1")
network.resolv_conf({str(resolv)!r}, {str(tmp_path / "none")!r})
print("ipaddress" in sys.modules)
ipam.POOL
print("ipaddress" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]
