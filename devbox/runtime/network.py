"""Container networks: a Linux bridge per network, a veth pair per container, names, NAT, ports.

This is the only module that imports pyroute2, and it does so lazily (see `_netlink()`): importing
pyroute2 costs 100-300 ms on these machines, so nothing on devbox's startup path pays for it, and
operations that find nothing to change in the kernel (detach of a container whose netns is gone,
ensure_network of an existing network, list/inspect) never import it at all.

State: `networks_dir()/<name>.json` holds a network (name, bridge, subnet, gateway) and its leases
(container id -> ip, name, aliases, host veth, mac, published ports). Every change happens under one
flock (`locks_dir()/network.lock`) and the file is rewritten atomically. The nftables table is derived
from these files and replaced atomically after each change (`nft.py`).

Everything devbox puts in the kernel is recognisable and findable after a crash:
- bridges are named `dbx-<name>` (at most 15 characters), host veth ends `dbx<container id[:12]>`;
- both carry the link alias (IFLA_IFALIAS, `ip link show` prints it) `devbox:<nft table name>`, which
  is unique per state root, so `reconcile()` removes only links of its own root even when test roots
  and the real one share the host;
- nftables rules live in devbox's own table and carry `dbx net NAME` / `dbx ctr ID` comments.

Per-container files (`containers_dir()/<id>/etc/{hosts,hostname,resolv.conf}`) are bind-mounted as
files into the container, so they are always rewritten in place (O_WRONLY|O_TRUNC), never replaced.
"""

from __future__ import annotations

import _socket  # inet_aton/inet_pton only: socket.py's import costs ~3 ms
import _thread
import errno
import os
import sys
import time

from devbox import fsutil, paths
from devbox.errors import AlreadyExists, ConfigError, NetworkError, NetworkNotFound
from devbox.fsutil import locked, read_json, write_json
from devbox.log import log
from devbox.record import field, record
from devbox.runtime import ipam, nft, rtnl
from devbox.runtime.ports import PortSpec, check_port_free, conflicts
from devbox.textmatch import ALNUM, LOWER_ALNUM, is_name

TYPE_CHECKING = False  # typing costs ~4 ms to import; only type checkers need it here
if TYPE_CHECKING:
    import ipaddress
    from typing import Any

# `import ipaddress` costs ~3-4 ms: the run path (attach/detach, reconcile, /etc/hosts, resolv.conf)
# works on the stored strings; only network creation (_used_subnets, ipam) imports it, lazily.

DEFAULT_NETWORK = "default"
RESERVED_NAMES = ("none", "host", "bridge")
NAME_MAX = 64  # network names: [A-Za-z0-9][A-Za-z0-9_.-]{0,63}
HOSTNAME_MAX = 253  # names and aliases in /etc/hosts: [A-Za-z0-9]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?
_SLUG_CHARS = LOWER_ALNUM | frozenset("_-")
BRIDGE_PREFIX = "dbx-"
VETH_PREFIX = "dbx"
IFNAMSIZ = 15
FALLBACK_NAMESERVERS = ("1.1.1.1", "8.8.8.8")


@record
class Attachment:
    network: str
    ip: str
    prefixlen: int
    gateway: str
    host_veth: str
    mac: str | None
    ports: list[PortSpec] = field(default_factory=list)
    rules_pending: bool = False  # attach(defer_rules=True) left the nft table to apply_rules()


# -- pyroute2, loaded lazily ----------------------------------------------------------------------

_NL: tuple[Any, Any] | None = None
_NL_LOCK = _thread.allocate_lock()  # threading's import costs more than this needs


def _netlink() -> tuple[Any, Any]:
    """(IPRoute, NetlinkError), imported on first use.

    `import pyroute2` runs the package's __init__, which imports NDB, IPDB, conntrack, nftables...
    (about 2x the cost of what devbox needs). Unless pyroute2 is already loaded, register the package
    without running its __init__ and import only `pyroute2.iproute.linux`; the package gets a module
    __getattr__ that runs the real __init__ on first use of anything else, so `from pyroute2 import X`
    elsewhere keeps working.
    """
    if _NL is not None:
        return _NL
    with _NL_LOCK:
        return _netlink_locked()


def _netlink_locked() -> tuple[Any, Any]:
    global _NL
    if _NL is not None:
        return _NL
    t0 = time.monotonic()
    if "pyroute2" not in sys.modules:
        import importlib.util
        import types

        spec = importlib.util.find_spec("pyroute2")
        if spec is not None and spec.submodule_search_locations and spec.loader is not None:
            pkg = types.ModuleType("pyroute2")
            pkg.__path__ = list(spec.submodule_search_locations)
            pkg.__spec__ = spec
            pkg.__file__ = spec.origin
            pkg.__package__ = "pyroute2"
            loader = spec.loader

            def _full_init(name: str) -> Any:
                # `from pyroute2 import config` asks the package first: hand out submodules as such
                if not name.startswith("__"):
                    try:
                        return importlib.import_module(f"pyroute2.{name}")
                    except ModuleNotFoundError as e:
                        if e.name != f"pyroute2.{name}":
                            raise
                d = pkg.__dict__
                d.pop("__getattr__", None)
                exec(loader.get_code("pyroute2"), d)  # type: ignore[attr-defined]  # noqa: S102
                if name in d:
                    return d[name]
                raise AttributeError(f"module 'pyroute2' has no attribute {name!r}")

            pkg.__getattr__ = _full_init  # type: ignore[method-assign]
            sys.modules["pyroute2"] = pkg
    try:
        from pyroute2.iproute.linux import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError
    except Exception:  # pragma: no cover - a pyroute2 layout we do not know: take the slow path
        sys.modules.pop("pyroute2", None)
        from pyroute2 import IPRoute, NetlinkError  # type: ignore[no-redef]
    _NL = (IPRoute, NetlinkError)
    log.debug("‣ import pyroute2: %.0f ms", (time.monotonic() - t0) * 1000)
    return _NL


# -- small kernel helpers that need no netlink ---------------------------------------------------


def _link_exists(ifname: str) -> bool:
    return os.path.exists(f"/sys/class/net/{ifname}")


def _list_links() -> list[str]:
    try:
        return os.listdir("/sys/class/net")
    except OSError:  # pragma: no cover
        return []


def _link_alias(ifname: str) -> str:
    try:
        with open(f"/sys/class/net/{ifname}/ifalias") as f:
            return f.read().strip()
    except OSError:
        return ""


def _link_master(ifname: str) -> str | None:
    try:
        return os.path.basename(os.readlink(f"/sys/class/net/{ifname}/master"))
    except OSError:
        return None


def _sysctl(key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/") if "/" not in key else key
    try:
        with open(path) as f:
            if f.read().strip() == value:
                return
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise NetworkError(f"cannot set {key}={value}: {e.strerror}") from None


def link_tag() -> str:
    """The alias every link of this state root carries."""
    return "devbox:" + nft.table_name()


def _delete_links(names: list[str]) -> None:
    """Delete links by name (those that exist), over devbox's own rtnetlink socket."""
    names = [n for n in names if _link_exists(n)]
    if not names:
        return
    with rtnl.Netlink() as nl:
        for n in names:
            nl.delete_link(n)


# -- state ----------------------------------------------------------------------------------------


def _lock() -> Any:
    return locked(os.path.join(paths.locks_dir(), "network.lock"))


def _net_path(name: str) -> str:
    return os.path.join(paths.networks_dir(), f"{name}.json")


def _load(name: str) -> dict[str, Any] | None:
    try:
        net: dict[str, Any] = read_json(_net_path(name))
    except FileNotFoundError:
        return None
    net.setdefault("leases", {})
    return net


def _load_all() -> list[dict[str, Any]]:
    d = paths.networks_dir()
    try:
        names = sorted(n for n in os.listdir(d) if n.endswith(".json") and not n.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for p in (os.path.join(d, n) for n in names):
        try:
            net = read_json(p)
        except (OSError, ValueError):
            log.warning("devbox: ignoring unreadable network state %s", p)
            continue
        net.setdefault("leases", {})
        out.append(net)
    return out


def _save(net: dict[str, Any]) -> None:
    write_json(_net_path(net["name"]), net)


def _public(net: dict[str, Any]) -> dict[str, Any]:
    """What list/inspect show: the network plus its containers."""
    out = {k: v for k, v in net.items() if k not in ("leases", "dying")}
    out["containers"] = {
        cid: {k: lease.get(k, True if k == "active" else None)
              for k in ("name", "aliases", "ip", "mac", "host_veth", "ports", "active")}
        for cid, lease in net["leases"].items()
    }
    out["bridge_present"] = _link_exists(net["bridge"])
    return out


def is_hostname(s: str) -> bool:
    """A container name or alias for /etc/hosts: [A-Za-z0-9]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?"""
    return is_name(s, HOSTNAME_MAX) and s[-1] in ALNUM


def validate_name(name: str) -> None:
    if not is_name(name, NAME_MAX):
        raise ConfigError(
            f"invalid network name {name!r}",
            hint="use letters, digits, '_', '.', '-' (at most 64 characters, starting with a letter or digit)",
        )
    if name in RESERVED_NAMES:
        raise ConfigError(f"network name {name!r} is reserved", hint="pick another name")


def _bridge_name(name: str, taken: set[str]) -> str:
    slug = "".join(c if c in _SLUG_CHARS else "-" for c in name.lower())  # [^a-z0-9_-] -> "-"
    room = IFNAMSIZ - len(BRIDGE_PREFIX)
    cands = []
    if len(slug) <= room:
        cands.append(BRIDGE_PREFIX + slug)
    for i in range(100):
        h = fsutil.sha256_hex(f"{name}:{i}".encode())[:4]
        cands.append(f"{BRIDGE_PREFIX}{slug[: room - 5]}-{h}")
    for c in cands:
        if c not in taken and not _link_exists(c):
            return c
    raise NetworkError(f"cannot find a free bridge name for network {name!r}")  # pragma: no cover


def _used_subnets(nets: list[dict[str, Any]]) -> list[tuple[ipaddress.IPv4Network, str]]:
    import ipaddress

    ours = {n["bridge"] for n in nets}
    used = [(ipaddress.IPv4Network(n["subnet"]), f"devbox network {n['name']}") for n in nets]
    used += [(r, f"host route via {dev}") for r, dev in ipam.host_routes() if dev not in ours]
    return used


# -- bridges --------------------------------------------------------------------------------------


def _setup_bridge(ipr: Any, net: dict[str, Any]) -> None:
    """Create (or complete) the bridge of `net`: link, alias, gateway address, up, sysctls."""
    _, NetlinkError = _netlink()
    br = net["bridge"]
    idx = ipr.link_lookup(ifname=br)
    if not idx:
        try:
            ipr.link("add", ifname=br, kind="bridge")
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise
        idx = ipr.link_lookup(ifname=br) or [m["index"] for m in ipr.poll(ipr.link, "dump", ifname=br, timeout=5)]
    i = idx[0]
    ipr.link("set", index=i, ifalias=link_tag())
    if not ipr.addr("dump", index=i, address=net["gateway"]):
        ipr.addr("add", index=i, address=net["gateway"], prefixlen=int(net["prefixlen"]))
    ipr.link("set", index=i, state="up")
    # Published ports on 127.0.0.1 are DNATed in OUTPUT and leave through the bridge with a loopback
    # source (masqueraded to the gateway); the kernel only routes such packets with route_localnet.
    _sysctl(f"/proc/sys/net/ipv4/conf/{br}/route_localnet", "1")
    _sysctl("/proc/sys/net/ipv4/ip_forward", "1")


def _ensure_bridges(nets: list[dict[str, Any]]) -> list[str]:
    """Recreate the bridges of `nets` that vanished (reboot, someone ran `ip link del`), and put
    the veths of running containers back on their bridge."""
    missing = [n for n in nets if not _link_exists(n["bridge"])]
    loose = [
        (n["bridge"], lease["host_veth"])
        for n in nets
        for lease in n["leases"].values()
        if lease.get("active", True) and _link_exists(lease["host_veth"])
        and _link_master(lease["host_veth"]) != n["bridge"]
    ]  # fmt: skip
    if not missing and not loose:
        return []
    IPRoute, _ = _netlink()
    with IPRoute() as ipr:
        for n in missing:
            log.debug("‣ recreate bridge %s of network %s", n["bridge"], n["name"])
            _setup_bridge(ipr, n)
        for br, veth in loose:
            log.debug("‣ put %s back on %s", veth, br)
            ipr.link("set", index=ipr.link_lookup(ifname=veth)[0], master=ipr.link_lookup(ifname=br)[0])
    return [n["name"] for n in missing]


# -- networks -------------------------------------------------------------------------------------


def create_network(name: str, subnet: str | None = None) -> dict[str, Any]:
    validate_name(name)
    with _lock():
        return _create_locked(name, subnet)


def _create_locked(name: str, subnet: str | None) -> dict[str, Any]:
    nets = _load_all()
    if any(n["name"] == name for n in nets):
        raise AlreadyExists(f"network {name!r} already exists", hint=f"devbox network rm {name}")
    used = _used_subnets(nets)
    if subnet:
        sn = ipam.parse_subnet(subnet)
        ipam.check_free(sn, used)
    else:
        sn = ipam.pick_subnet([u for u, _ in used])
    bridge = _bridge_name(name, {n["bridge"] for n in nets})
    net: dict[str, Any] = {
        "name": name,
        "bridge": bridge,
        "subnet": str(sn),
        "prefixlen": sn.prefixlen,
        "gateway": str(ipam.gateway(sn)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "leases": {},
    }
    IPRoute, _ = _netlink()
    try:
        with IPRoute() as ipr:
            _setup_bridge(ipr, net)
        _save(net)
        nft.apply(nets + [net])
    except BaseException as e:
        try:
            os.unlink(_net_path(name))
        except FileNotFoundError:
            pass
        try:
            _delete_links([bridge])
            nft.apply(nets)
        except Exception as undo:  # pragma: no cover
            log.warning("devbox: undo of network %s failed: %s", name, undo)
        if isinstance(e, NetworkError):
            raise
        if isinstance(e, Exception):
            raise NetworkError(f"cannot create network {name!r}: {e}") from e
        raise
    log.debug("‣ network %s: bridge %s, subnet %s", name, bridge, sn)
    return _public(net)


def ensure_network(name: str) -> dict[str, Any]:
    """The network `name`, created with a free subnet if it does not exist yet."""
    net = _load(name)
    if net is not None:
        return _public(net)
    validate_name(name)
    with _lock():
        net = _load(name)
        if net is not None:
            return _public(net)
        return _create_locked(name, None)


def get_network(name: str) -> dict[str, Any]:
    net = _load(name)
    if net is None:
        raise NetworkNotFound(f"no network named {name!r}", hint="devbox network ls")
    return _public(net)


def list_networks() -> list[dict[str, Any]]:
    return [_public(n) for n in _load_all()]


def remove_network(name: str, force: bool = False) -> None:
    with _lock():
        nets = _load_all()
        net = next((n for n in nets if n["name"] == name), None)
        if net is None:
            raise NetworkNotFound(f"no network named {name!r}", hint="devbox network ls")
        if net["leases"] and not force:
            names = ", ".join(sorted(lease.get("name") or cid[:12] for cid, lease in net["leases"].items()))
            raise NetworkError(
                f"network {name!r} has containers attached: {names}",
                hint="remove them first, or use --force to cut them off",
            )
        rest = [n for n in nets if n["name"] != name]
        dying = list(net.get("dying") or {})
        _delete_links([lease["host_veth"] for lease in net["leases"].values()] + dying + [net["bridge"]])
        nft.apply(rest)
        try:
            os.unlink(_net_path(name))
        except FileNotFoundError:
            pass
        for cid, lease in net["leases"].items():
            _write_hosts(cid, initial_hosts(lease.get("name") or cid[:12], None, lease.get("aliases", [])))


# -- containers -----------------------------------------------------------------------------------


def hosts_file(container_id: str) -> str:
    return os.path.join(paths.containers_dir(), container_id, "etc", "hosts")


def _hosts_line(ip: str, name: str | None, aliases: list[str]) -> str:
    names = [n for n in [name, *aliases] if n]
    seen: list[str] = []
    for n in names:
        if n not in seen:
            seen.append(n)
    return f"{ip}\t{' '.join(seen)}\n" if seen else ""


_HOSTS_HEAD = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def initial_hosts(name: str, ip: str | None, aliases: list[str]) -> str:
    """/etc/hosts for a container before it joins a network (or with --network none: ip None)."""
    return _HOSTS_HEAD + _hosts_line(ip or "127.0.1.1", name, aliases)


def _render_hosts(cid: str, net: dict[str, Any], own: dict[str, Any]) -> str:
    text = _HOSTS_HEAD + _hosts_line(own["ip"], own.get("name"), own.get("aliases", []))
    others = sorted(
        ((c, lease) for c, lease in net.get("leases", {}).items() if c != cid and lease.get("active", True)),
        key=lambda x: _socket.inet_aton(x[1]["ip"]),  # 4 bytes: numeric order for dotted quads
    )
    if others:
        text += f"# devbox network {net['name']}\n"
        for _c, lease in others:
            text += _hosts_line(lease["ip"], lease.get("name"), lease.get("aliases", []))
    return text


def write_in_place(path: str, text: str) -> None:
    """Rewrite a (bind-mounted) file keeping its inode: the container sees the new content."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        data = text.encode()
        while data:
            n = os.write(fd, data)
            data = data[n:]
    finally:
        os.close(fd)


def _write_hosts(cid: str, text: str) -> None:
    path = hosts_file(cid)
    if not os.path.isdir(os.path.dirname(path)):  # the engine has not made (or already removed) the container dir
        return
    write_in_place(path, text)


def _update_hosts(net: dict[str, Any]) -> None:
    for cid, lease in net["leases"].items():
        if lease.get("active", True):
            _write_hosts(cid, _render_hosts(cid, net, lease))


def _veth_name(cid: str, nets: list[dict[str, Any]]) -> str:
    taken = {lease["host_veth"]: c for n in nets for c, lease in n["leases"].items()}
    clean = "".join(c for c in cid.lower() if c in LOWER_ALNUM)  # without [^a-z0-9]
    room = IFNAMSIZ - len(VETH_PREFIX)
    cand = VETH_PREFIX + clean[:room]
    if len(clean) >= 4 and taken.get(cand, cid) == cid:
        return cand
    return VETH_PREFIX + fsutil.sha256_hex(cid.encode())[:room]


def _find_lease(nets: list[dict[str, Any]], cid: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    for n in nets:
        if cid in n["leases"]:
            return n, n["leases"][cid]
    return None


def attach(
    container_id: str,
    pid: int,
    network: str,
    name: str,
    aliases: list[str],
    ports: list[PortSpec],
    defer_rules: bool = False,
) -> Attachment:
    """Connect the container whose init is `pid` (in its own, still empty netns) to `network`.

    defer_rules=True leaves the published-port rules to a later apply_rules() call, which container
    start makes while the payload execs: the libnftables transaction is then off the critical path."""
    for n in [name, *aliases]:
        if not is_hostname(n):
            raise ConfigError(f"invalid container name or alias {n!r} for /etc/hosts")
    t0 = time.monotonic()
    with _lock():
        nets = _load_all()
        net = next((n for n in nets if n["name"] == network), None)
        if net is None and network == DEFAULT_NETWORK:
            _create_locked(network, None)
            nets = _load_all()
            net = next((n for n in nets if n["name"] == network), None)
        if net is None:
            raise NetworkNotFound(f"no network named {network!r}", hint=f"devbox network create {network}")
        found = _find_lease(nets, container_id)
        if found and found[0]["name"] != network:
            raise NetworkError(
                f"container {container_id[:12]} is already attached to network {found[0]['name']!r}"
            )
        others = [
            PortSpec.from_dict(p)
            for n in nets
            for c, lease in n["leases"].items()
            if c != container_id and lease.get("active", True)
            for p in lease.get("ports", [])
        ]
        bad = conflicts(ports, others)
        if bad is not None:
            raise NetworkError(
                f"host port {bad.host_port}/{bad.proto} is already published by another devbox container",
                hint="publish on another host port",
            )
        for p in ports:
            check_port_free(p)
        old = found[1] if found else None
        ip = old["ip"] if old else ipam.allocate(net["subnet"], [lease["ip"] for lease in net["leases"].values()])
        lease = {
            "ip": ip,
            "name": name,
            "aliases": list(aliases),
            "host_veth": old["host_veth"] if old else _veth_name(container_id, nets),
            "mac": None,
            "ports": [p.to_dict() for p in ports],
            "pid": pid,
            "netns": None,
            "active": True,
        }
        net["leases"][container_id] = lease
        _save(net)
        try:
            lease["mac"], recreated = _plumb(net, lease, pid)
            _save(net)
            t1 = time.monotonic()
            pending = bool(ports or (old and old.get("active", True) and old.get("ports")) or recreated)
            if recreated:  # a new bridge: the whole table, now
                nft.apply(nets)
                pending = False
            elif pending and not defer_rules:
                nft.apply_ports(nets)  # the table depends on leases only through their ports
                pending = False
            t2 = time.monotonic()
            _update_hosts(net)
            log.debug("‣ nft %.0f ms, hosts files %.0f ms", (t2 - t1) * 1000, (time.monotonic() - t2) * 1000)
        except BaseException as e:
            _undo_attach(nets, net, container_id, lease, old)
            if isinstance(e, NetworkError):
                raise
            if isinstance(e, Exception):
                raise NetworkError(
                    f"cannot attach container {container_id[:12]} to network {network!r}: {e}",
                    hint="run with --debug for the failing step",
                ) from e
            raise
    log.debug("‣ attach %s to %s as %s: %.0f ms", container_id[:12], network, ip, (time.monotonic() - t0) * 1000)
    return Attachment(
        network=network,
        ip=ip,
        prefixlen=int(net["prefixlen"]),
        gateway=net["gateway"],
        host_veth=lease["host_veth"],
        mac=lease["mac"],
        ports=list(ports),
        rules_pending=pending,
    )


def apply_rules() -> None:
    """Bring the published-port rules in line with the networks' state (after attach(defer_rules=True))."""
    with _lock():
        nft.apply_ports(_load_all())


def _plumb(net: dict[str, Any], lease: dict[str, Any], pid: int) -> tuple[str | None, bool]:
    """The kernel part of attach: veth pair, peer straight into the container's netns as eth0.

    Spoken with devbox's own rtnetlink client (rtnl.py, 3-8 ms), not pyroute2 (100-300 ms to import),
    which is only loaded to rebuild a bridge that vanished."""
    t0 = time.monotonic()
    nspath = f"/proc/{pid}/ns/net"
    try:
        nsfd = os.open(nspath, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetworkError(f"container process {pid} is gone") from None
    try:
        st = os.fstat(nsfd)
        if st.st_ino == os.stat("/proc/self/ns/net").st_ino:
            raise NetworkError(f"process {pid} shares the host's network namespace; refusing to move links into it")
        veth = lease["host_veth"]
        lease["netns"] = st.st_ino
        recreated = not _link_exists(net["bridge"])
        if recreated:  # reboot, or someone deleted it
            IPRoute, _ = _netlink()
            with IPRoute() as ipr:
                _setup_bridge(ipr, net)
        with rtnl.Netlink() as nl:
            nl.delete_link(veth)  # a leftover of an earlier run of this container
            nl.add_veth(veth, "eth0", nsfd, nl.index(net["bridge"]))
            nl.set_alias(nl.index(veth), link_tag())
    finally:
        os.close(nsfd)
    t1 = time.monotonic()
    with rtnl.in_netns(nspath) as ns:
        ns.set_up(ns.index("lo"))
        eth = ns.index("eth0")
        ns.add_address(eth, lease["ip"], int(net["prefixlen"]))
        ns.set_up(eth)
        ns.add_default_route(net["gateway"])
        mac = ns.mac("eth0")
    log.debug("‣ veth %s: host side %.1f ms, container side %.1f ms", veth, (t1 - t0) * 1000,
              (time.monotonic() - t1) * 1000)  # fmt: skip
    return mac, recreated


def _undo_attach(nets: list[dict[str, Any]], net: dict[str, Any], cid: str, lease: dict[str, Any],
                 old: dict[str, Any] | None) -> None:  # fmt: skip
    try:
        _delete_links([lease["host_veth"]])
    except Exception as e:  # pragma: no cover
        log.warning("devbox: cannot delete %s: %s", lease["host_veth"], e)
    if old is not None:  # a stopped container keeps the address it had
        net["leases"][cid] = {**old, "active": False, "pid": None}
    else:
        net["leases"].pop(cid, None)
    try:
        _save(net)
        nft.apply(nets)
        _update_hosts(net)
    except Exception as e:  # pragma: no cover
        log.warning("devbox: undo of attach %s failed: %s", cid[:12], e)


def _netns_alive(lease: dict[str, Any]) -> bool:
    pid, ino = lease.get("pid"), lease.get("netns")
    if not pid or not ino:
        return False
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == ino
    except OSError:
        return False


DYING_GRACE = 5.0  # seconds a veth of a dead netns is left to the kernel before reconcile deletes it


def detach(container_id: str, release: bool = True) -> None:
    """Disconnect a container: veth (if still there), port rules, the others' hosts entries, and
    (release=True) its lease. release=False keeps the address reserved for the container's next
    start (a stopped container). Idempotent."""
    with _lock():
        nets = _load_all()
        found = _find_lease(nets, container_id)
        if found is None:  # never attached, or already detached: a veth left is reconcile's business
            return
        net, lease = found
        if _netns_alive(lease):
            _delete_links([lease["host_veth"]])
        elif _link_exists(lease["host_veth"]):
            # The container's netns died with its last process: the kernel deletes the veth pair by
            # itself, from a work queue, moments later. Deleting it here would wait for that (20-80
            # ms here). Reconcile leaves it DYING_GRACE seconds before it counts as a leftover; start
            # deletes a leftover of the same name before it plumbs.
            net.setdefault("dying", {})[lease["host_veth"]] = time.time()
        had_rules = lease.get("active", True) and bool(lease.get("ports"))
        if release:
            del net["leases"][container_id]
        else:
            lease.update({"active": False, "pid": None})
        _save(net)
        if had_rules:
            nft.apply_ports(nets)
        _update_hosts(net)


def reconcile(live_container_ids: set[str]) -> None:
    """Bring kernel and state back in line after kill -9 or a reboot:
    - leases of containers not in `live_container_ids` are released (veth deleted if still there);
    - links tagged with this root's alias that no network or live lease explains are deleted;
    - bridges that vanished (reboot) are recreated;
    - devbox's nftables table is rebuilt from the state (deleted when there are no networks) when
      any of the above changed something."""
    with _lock():
        nets = _load_all()
        doomed: list[str] = []
        changed: list[dict[str, Any]] = []
        pruned: list[dict[str, Any]] = []  # only their list of dying veths changed: nothing to apply
        for n in nets:
            for cid in [c for c in n["leases"] if c not in live_container_ids]:
                doomed.append(n["leases"].pop(cid)["host_veth"])
                changed.append(n)
            for lease in n["leases"].values():
                if lease.get("active", True) and not _link_exists(lease["host_veth"]):
                    lease.update({"active": False, "pid": None})  # its netns died (kill -9, reboot)
                    changed.append(n)
        wanted = {n["bridge"] for n in nets} | {
            lease["host_veth"] for n in nets for lease in n["leases"].values() if lease.get("active", True)
        }
        now = time.time()
        for n in nets:  # veths of dead netns: the kernel deletes them; give it DYING_GRACE seconds
            dying = n.get("dying") or {}
            young = {v: t for v, t in dying.items() if now - t < DYING_GRACE and _link_exists(v)}
            wanted |= set(young)
            if young != dying:
                n["dying"] = young
                pruned.append(n)
        tag = link_tag()
        for ifname in _list_links():
            if ifname.startswith(VETH_PREFIX) and ifname not in wanted and _link_alias(ifname) == tag:
                doomed.append(ifname)
        _delete_links(sorted(set(doomed)))
        for n in {id(n): n for n in changed + pruned}.values():
            _save(n)
        recreated = _ensure_bridges(nets)
        if doomed or recreated or changed:
            # Rules depend on the networks and the ports of active leases. When nothing changed the
            # table is left alone, so a reconcile with nothing to do costs no nft run (and no
            # pyroute2 import): cheap enough to run at the start of every devbox command.
            nft.apply(nets)
        for n in {id(n): n for n in changed}.values():
            _update_hosts(n)
        if doomed or recreated:
            log.debug("‣ reconcile: removed %s, recreated bridges of %s", sorted(set(doomed)), recreated)


# -- resolv.conf ----------------------------------------------------------------------------------


_V6_LOOPBACK = bytes(15) + b"\x01"


def _is_loopback(addr: str) -> bool:
    """ipaddress.ip_address(addr without %scope).is_loopback, False if invalid, without ipaddress:
    127.0.0.0/8 or ::1 in any spelling. inet_pton is as strict as ipaddress (no "127.1", no leading
    zeros); like ipaddress on 3.11, ::ffff:127.0.0.1 is not loopback."""
    a = addr.split("%", 1)[0]
    try:
        if ":" in a:
            return _socket.inet_pton(_socket.AF_INET6, a) == _V6_LOOPBACK
        return _socket.inet_pton(_socket.AF_INET, a)[0] == 127
    except (OSError, ValueError):  # ValueError: embedded NUL, unencodable surrogates
        return False


def resolv_conf(path: str = "/etc/resolv.conf", resolved: str = "/run/systemd/resolve/resolv.conf") -> str:
    """The container's /etc/resolv.conf: the host's, minus what a box cannot reach.

    - If the host uses systemd-resolved's stub (127.0.0.53), use resolved's list of upstream servers
      (/run/systemd/resolve/resolv.conf) instead.
    - Loopback nameservers (127.0.0.0/8, ::1) are dropped: in the box they would be the box itself.
      IPv6 nameservers are dropped too (boxes have IPv4 only).
    - If nothing is left, FALLBACK_NAMESERVERS (1.1.1.1, 8.8.8.8) are used, as docker does.
    """
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError:
        text = ""
    servers = [ln.split()[1] for ln in text.splitlines() if ln.split()[:1] == ["nameserver"] and len(ln.split()) > 1]
    if any(_is_loopback(s) for s in servers) and os.path.exists(resolved):
        try:
            with open(resolved) as fh:
                text = fh.read()
        except OSError:
            pass
    out: list[str] = []
    kept = 0
    for ln in text.splitlines():
        f = ln.split()
        if f[:1] == ["nameserver"] and len(f) > 1:
            if _is_loopback(f[1]) or ":" in f[1]:
                continue
            kept += 1
        out.append(ln)
    if kept == 0:
        out.append(f"# devbox: the host's nameservers are not reachable from a box; using {', '.join(FALLBACK_NAMESERVERS)}")
        out += [f"nameserver {s}" for s in FALLBACK_NAMESERVERS]
    return "\n".join(out).strip("\n") + "\n"
