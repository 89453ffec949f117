"""Network engine logic without root: nft rendering, hosts/resolv.conf files, naming, and the state
flow of attach/detach/reconcile with the kernel parts (netlink, nft) replaced by recording fakes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devbox.errors import ConfigError, NetworkError, NetworkNotFound
from devbox.runtime import network, nft
from devbox.runtime.ports import parse_port

# -- nft ----------------------------------------------------------------------------------------

NET = {
    "name": "shop",
    "bridge": "dbx-shop",
    "subnet": "10.213.4.0/24",
    "leases": {
        "c1": {"ip": "10.213.4.2", "ports": [parse_port("8080:80").to_dict(), parse_port("0.0.0.0:53:53/udp").to_dict()]},
        "c2": {"ip": "10.213.4.3", "ports": [parse_port("9090:90").to_dict()], "active": False},
    },
}


def test_render_rules() -> None:
    text = "\n".join(nft.render([NET], "devbox_t"))
    assert text.startswith("add table ip devbox_t\ndelete table ip devbox_t\ntable ip devbox_t {")
    for rule in [
        'iifname "dbx-shop" ip daddr 127.0.0.0/8 drop comment "dbx net shop"',
        'iifname "dbx-shop" oifname "dbx-shop" accept comment "dbx net shop"',
        'iifname "dbx-shop" oifname "dbx-*" drop comment "dbx net shop"',
        'iifname "dbx-*" oifname "dbx-shop" drop comment "dbx net shop"',
        'oifname "dbx-shop" ip saddr 127.0.0.0/8 masquerade comment "dbx net shop"',
        'oifname != "dbx-shop" ip saddr 10.213.4.0/24 masquerade comment "dbx net shop"',
        'ip daddr 127.0.0.1 tcp dport 8080 dnat to 10.213.4.2:80 comment "dbx ctr c1"',
        'fib daddr type local udp dport 53 dnat to 10.213.4.2:53 comment "dbx ctr c1"',
    ]:
        assert rule in text, rule
    # loopback-bound ports are only reachable from the host itself: no prerouting rule for them
    pre = text.split("chain prerouting {")[1].split("}")[0]
    assert "8080" not in pre and "udp dport 53" in pre
    # an inactive (stopped) container publishes nothing
    assert "9090" not in text


def test_table_name_per_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DEVBOX_ROOT", "/var/lib/devbox")
    assert nft.table_name() == "devbox"
    monkeypatch.setenv("DEVBOX_ROOT", os.fspath(tmp_path))
    t = nft.table_name()
    assert t.startswith("devbox_") and len(t) == len("devbox_") + 8


# -- files --------------------------------------------------------------------------------------


def test_initial_hosts() -> None:
    assert network.initial_hosts("api", None, ["web", "api"]) == (
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tapi web\n"
    )
    assert network.initial_hosts("api", "10.213.0.2", []).endswith("10.213.0.2\tapi\n")


def test_render_hosts_lists_active_others() -> None:
    net = {
        "name": "n",
        "leases": {
            "a": {"ip": "10.213.0.10", "name": "a", "aliases": ["alpha"]},
            "b": {"ip": "10.213.0.9", "name": "b", "aliases": []},
            "c": {"ip": "10.213.0.3", "name": "c", "aliases": [], "active": False},
        },
    }
    text = network._render_hosts("a", net, net["leases"]["a"])
    assert text.splitlines()[2:] == ["10.213.0.10\ta alpha", "# devbox network n", "10.213.0.9\tb"]


def test_write_in_place_keeps_inode(tmp_path: Path) -> None:
    f = tmp_path / "hosts"
    f.write_text("old content that is longer\n")
    ino = f.stat().st_ino
    network.write_in_place(f, "new\n")
    assert f.read_text() == "new\n" and f.stat().st_ino == ino


def test_write_in_place_refuses_symlink(tmp_path: Path) -> None:
    (tmp_path / "target").write_text("x")
    (tmp_path / "hosts").symlink_to(tmp_path / "target")
    with pytest.raises(OSError):
        network.write_in_place(tmp_path / "hosts", "evil")
    assert (tmp_path / "target").read_text() == "x"


def test_resolv_conf_plain(tmp_path: Path) -> None:
    f = tmp_path / "resolv.conf"
    f.write_text("search corp.example\nnameserver 10.0.0.53\nnameserver 127.0.0.1\nnameserver ::1\noptions edns0\n")
    assert network.resolv_conf(str(f), str(tmp_path / "none")) == (
        "search corp.example\nnameserver 10.0.0.53\noptions edns0\n"
    )


def test_resolv_conf_follows_systemd_resolved(tmp_path: Path) -> None:
    stub = tmp_path / "stub"
    stub.write_text("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n")
    real = tmp_path / "real"
    real.write_text("nameserver 192.168.1.1\nnameserver fe80::1%eth0\nsearch lan\n")
    assert network.resolv_conf(str(stub), str(real)) == "nameserver 192.168.1.1\nsearch lan\n"


def test_resolv_conf_fallback(tmp_path: Path) -> None:
    f = tmp_path / "resolv.conf"
    f.write_text("nameserver 127.0.0.53\n")
    out = network.resolv_conf(str(f), str(tmp_path / "none"))
    assert "nameserver 1.1.1.1\nnameserver 8.8.8.8\n" in out and "127.0.0.53" not in out


# -- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["none", "host", "-x", "a b", "x" * 65, "a/b", ""])
def test_validate_name_rejects(name: str) -> None:
    with pytest.raises(ConfigError):
        network.validate_name(name)


def test_bridge_names_fit_ifnamsiz(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network, "_link_exists", lambda n: False)
    assert network._bridge_name("shop", set()) == "dbx-shop"
    long = network._bridge_name("A.Very.Long.Project_Name", set())
    assert long.startswith("dbx-a-very") and len(long) == 15
    assert network._bridge_name("shop", {"dbx-shop"}) != "dbx-shop"
    assert len(network._bridge_name("shop", {"dbx-shop"})) <= 15


def test_veth_names() -> None:
    assert network._veth_name("0123456789abcdef", []) == "dbx0123456789ab"
    nets = [{"leases": {"0123456789abXXXX": {"host_veth": "dbx0123456789ab"}}}]
    other = network._veth_name("0123456789abcdef", nets)
    assert other != "dbx0123456789ab" and other.startswith("dbx") and len(other) == 15


# -- lazy import --------------------------------------------------------------------------------


def test_startup_path_does_not_import_pyroute2() -> None:
    code = (
        "import sys, devbox.cli, devbox.runtime.network, devbox.runtime.ports, devbox.cli.network; "
        "devbox.cli._register(); print('pyroute2' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_lazy_loader_keeps_pyroute2_usable() -> None:
    code = (
        "from devbox.runtime import network; IPRoute, E = network._netlink(); "
        ""
        "from pyroute2 import IPRoute as I2, NetlinkError; assert I2 is IPRoute and NetlinkError is E; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ok"


# -- state flow with fakes ----------------------------------------------------------------------


class Fakes:
    def __init__(self) -> None:
        self.links: set[str] = set()
        self.nft: list[list[dict[str, Any]]] = []
        self.plumbed: list[tuple[str, int]] = []
        self.alive = True


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Fakes:
    monkeypatch.setenv("DEVBOX_ROOT", os.fspath(tmp_path / "root"))
    f = Fakes()

    def setup_bridge(_ipr: Any, net: dict[str, Any]) -> None:
        f.links.add(net["bridge"])

    def plumb(net: dict[str, Any], lease: dict[str, Any], pid: int) -> tuple[str, bool]:
        f.plumbed.append((lease["host_veth"], pid))
        f.links.add(lease["host_veth"])
        return "02:00:00:00:00:01", False

    class FakeIPR:
        def __enter__(self) -> FakeIPR:
            return self

        def __exit__(self, *a: object) -> None:
            pass

        def link_lookup(self, ifname: str) -> list[int]:
            return [1]

        def link(self, *a: object, **kw: object) -> None:
            pass

    monkeypatch.setattr(network, "_netlink", lambda: (FakeIPR, Exception))
    monkeypatch.setattr(network, "_setup_bridge", setup_bridge)
    monkeypatch.setattr(network, "_plumb", plumb)
    monkeypatch.setattr(network, "_link_exists", lambda n: n in f.links)
    monkeypatch.setattr(network, "_list_links", lambda: sorted(f.links))
    monkeypatch.setattr(network, "_link_alias", lambda n: network.link_tag() if n in f.links else "")
    monkeypatch.setattr(network, "_delete_links", lambda names: f.links.difference_update(names))
    monkeypatch.setattr(network.ipam, "host_routes", lambda: [])
    monkeypatch.setattr(nft, "apply", lambda nets: f.nft.append([dict(n) for n in nets]))
    monkeypatch.setattr(nft, "apply_ports", lambda nets: f.nft.append([dict(n) for n in nets]))
    monkeypatch.setattr(network, "check_port_free", lambda p: None)
    # a lease's netns is alive while its container runs (pid set); stopped, the kernel owns the veth
    monkeypatch.setattr(network, "_netns_alive", lambda lease: f.alive)
    return f


def _mkdir(cid: str) -> Path:
    p = Path(network.hosts_file(cid))
    p.parent.mkdir(parents=True)
    p.write_text("")
    return p


def test_attach_detach_flow(fakes: Fakes) -> None:
    net = network.create_network("shop")
    assert net["subnet"] == "10.213.0.0/24" and "dbx-shop" in fakes.links
    ha, hb = _mkdir("aaaa1111"), _mkdir("bbbb2222")
    a = network.attach("aaaa1111", 100, "shop", "api", [], [parse_port("8080:80")])
    b = network.attach("bbbb2222", 200, "shop", "web", ["www"], [])
    assert (a.ip, b.ip, a.gateway, a.prefixlen) == ("10.213.0.2", "10.213.0.3", "10.213.0.1", 24)
    assert a.host_veth == "dbxaaaa1111" and a.mac == "02:00:00:00:00:01"
    assert "10.213.0.3\tweb www" in ha.read_text() and "10.213.0.2\tapi" in hb.read_text()
    # port conflicts between devbox containers are caught before the kernel is touched
    with pytest.raises(NetworkError, match="already published"):
        network.attach("cccc3333", 300, "shop", "x", [], [parse_port("8080:81")])
    # stop keeps the address; start again gets it back
    network.detach("aaaa1111", release=False)
    assert "api" not in hb.read_text()
    a2 = network.attach("aaaa1111", 101, "shop", "api", [], [])
    assert a2.ip == "10.213.0.2"
    network.detach("aaaa1111")
    network.detach("aaaa1111")  # idempotent
    assert "api" not in hb.read_text()
    assert network.attach("dddd4444", 400, "shop", "d", [], []).ip == "10.213.0.2"  # released, reused
    with pytest.raises(NetworkError, match="has containers attached"):
        network.remove_network("shop")
    network.remove_network("shop", force=True)
    assert fakes.links == set() and network.list_networks() == []
    assert fakes.nft[-1] == []


def test_attach_unknown_network(fakes: Fakes) -> None:
    with pytest.raises(NetworkNotFound):
        network.attach("aaaa1111", 1, "nope", "x", [], [])


def test_attach_creates_default_network(fakes: Fakes) -> None:
    a = network.attach("aaaa1111", 1, "default", "x", [], [])
    assert a.network == "default" and network.get_network("default")["bridge"] == "dbx-default"


def test_attach_failure_undoes_everything(fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    network.create_network("shop")

    def boom(net: dict[str, Any], lease: dict[str, Any], pid: int) -> tuple[str, bool]:
        fakes.links.add(lease["host_veth"])
        raise OSError("netlink said no")

    monkeypatch.setattr(network, "_plumb", boom)
    with pytest.raises(NetworkError, match="cannot attach container aaaa1111 to network 'shop': netlink said no"):
        network.attach("aaaa1111", 1, "shop", "x", [], [parse_port("8080:80")])
    assert fakes.links == {"dbx-shop"}
    assert network.get_network("shop")["containers"] == {}


def test_reconcile(fakes: Fakes) -> None:
    network.create_network("shop")
    network.attach("aaaa1111", 1, "shop", "a", [], [])
    network.attach("bbbb2222", 2, "shop", "b", [], [parse_port("8080:80")])
    fakes.links.add("dbxorphan00000")  # a tagged veth no lease explains
    fakes.links.discard("dbx-shop")  # "reboot": bridge gone
    network.reconcile({"bbbb2222"})
    assert fakes.links == {"dbx-shop", "dbxbbbb2222"}
    assert list(network.get_network("shop")["containers"]) == ["bbbb2222"]
    # kill -9 of the container: its veth vanished with the netns -> lease kept but inactive
    fakes.links.discard("dbxbbbb2222")
    network.reconcile({"bbbb2222"})
    assert network.get_network("shop")["containers"]["bbbb2222"]["active"] is False
    assert "8080" not in "\n".join(nft.render(fakes.nft[-1], "t"))


def test_failed_restart_keeps_the_address(fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    network.create_network("shop")
    network.attach("aaaa1111", 1, "shop", "a", [], [])
    network.detach("aaaa1111", release=False)

    def boom(net: dict[str, Any], lease: dict[str, Any], pid: int) -> tuple[str, bool]:
        raise OSError("no")

    monkeypatch.setattr(network, "_plumb", boom)
    with pytest.raises(NetworkError):
        network.attach("aaaa1111", 2, "shop", "a", [], [])
    c = network.get_network("shop")["containers"]["aaaa1111"]
    assert c["ip"] == "10.213.0.2" and c["active"] is False


def test_veth_of_dead_netns_is_left_to_the_kernel_then_swept(fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deleting a veth whose netns is dying waits 20-80 ms for the kernel: detach leaves it, reconcile
    leaves it for DYING_GRACE seconds (the kernel removes it in ms), then deletes it as a leftover."""
    network.create_network("shop")
    _mkdir("aaaa1111")
    a = network.attach("aaaa1111", 100, "shop", "api", [], [])
    fakes.alive = False  # the container's last process exited
    network.detach("aaaa1111")
    assert a.host_veth in fakes.links  # not deleted by devbox
    assert network.get_network("shop")["containers"] == {}  # but the lease is gone
    network.reconcile(set())
    assert a.host_veth in fakes.links  # young: the kernel's to delete
    clock = [network.time.time() + network.DYING_GRACE + 1]
    monkeypatch.setattr(network.time, "time", lambda: clock[0])
    network.reconcile(set())
    assert a.host_veth not in fakes.links  # outlived the grace: a leftover, deleted
    assert network._load_all()[0]["dying"] == {}
