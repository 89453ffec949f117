"""Networking against the real kernel, with real traffic.

Containers are simulated: a process made with `unshare --net --mount` whose /etc/hosts is a bind
mount of the container's host-side hosts file, running busybox httpd (or a small python server).
The tests send traffic only to 127.0.0.1 and to addresses on bridges and namespaces they made
themselves (subnets picked by devbox from 10.213.0.0/16, an upstream namespace on 10.250.x.0/30).

Every test runs against its own private DEVBOX_ROOT, so its bridges, veths (tagged with the root's
link alias) and nftables table are its own; a finalizer removes them and asserts nothing is left.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devbox.errors import NetworkError
from devbox.runtime import network, nft
from devbox.runtime.ports import parse_port

pytestmark = [pytest.mark.root, pytest.mark.network]

if shutil.which("busybox") is None or shutil.which("nsenter") is None:  # pragma: no cover
    pytest.skip("needs busybox and nsenter", allow_module_level=True)

UPSTREAM_HTTP = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (self.client_address[0] + "\n").encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"""

UDP_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(2048); s.sendto(b"echo:" + data, peer)
"""


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _tcp_open(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


def _http_get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback/test addresses only
        return r.read().decode()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _tagged_links() -> list[str]:
    tag = network.link_tag()
    return [n for n in os.listdir("/sys/class/net") if network._link_alias(n) == tag]


@dataclass
class Box:
    cid: str
    name: str
    pid: int
    proc: subprocess.Popen[bytes]

    def run(self, *argv: str, timeout: float = 8) -> subprocess.CompletedProcess[str]:
        """Run a command inside the box (its net and mount namespaces)."""
        try:
            return subprocess.run(
                ["nsenter", f"--target={self.pid}", "--net", "--mount", *argv],
                capture_output=True, text=True, timeout=timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(e.cmd, 124, "", "timeout")

    def wget(self, url: str, timeout: float = 4) -> subprocess.CompletedProcess[str]:
        # busybox wget's own -T crashes on refused connections here; bound it with timeout(1)
        return self.run("timeout", str(timeout), "busybox", "wget", "-qO-", url, timeout=timeout + 4)


@pytest.fixture
def root(session_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private state root; at the end nothing of it may be left in the kernel."""
    r = session_root.parent / f"netroot-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("DEVBOX_ROOT", os.fspath(r))
    try:
        yield r
    finally:
        for n in network.list_networks():
            with contextlib.suppress(Exception):
                network.remove_network(n["name"], force=True)
        left = _tagged_links()
        for ifname in left:
            subprocess.run(["ip", "link", "del", ifname], capture_output=True)
        table = nft.list_table()
        if table is not None:
            subprocess.run(["nft", "delete", "table", "ip", nft.table_name()], capture_output=True)
        shutil.rmtree(r, ignore_errors=True)
        assert not left, f"links left behind: {left}"
        assert table is None, "nftables table left behind"


@pytest.fixture
def boxes(root: Path) -> Iterator[Callable[..., Box]]:
    """Factory: box(name, argv) starts a simulated container (not yet attached)."""
    made: list[Box] = []
    host_netns = os.stat("/proc/self/ns/net").st_ino

    def make(name: str, argv: list[str]) -> Box:
        cid = uuid.uuid4().hex
        hosts = Path(network.hosts_file(cid))
        hosts.parent.mkdir(parents=True)
        hosts.write_text(network.initial_hosts(name, None, []))
        script = f'mount --bind {hosts} /etc/hosts && exec "$@"'
        proc = subprocess.Popen(["unshare", "--net", "--mount", "--", "sh", "-c", script, "sh", *argv])
        box = Box(cid, name, proc.pid, proc)
        made.append(box)
        _wait(lambda: os.stat(f"/proc/{proc.pid}/ns/net").st_ino != host_netns, what="the box's netns")
        _wait(lambda: " /etc/hosts " in Path(f"/proc/{proc.pid}/mountinfo").read_text(), what="hosts mount")
        return box

    try:
        yield make
    finally:
        for b in reversed(made):
            with contextlib.suppress(Exception):
                network.detach(b.cid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(b.pid, signal.SIGKILL)
            b.proc.wait()


@pytest.fixture
def www(tmp_path: Path) -> Path:
    d = tmp_path / "www"
    d.mkdir()
    (d / "index.html").write_text("hello from the box\n")
    return d


def _httpd(www: Path) -> list[str]:
    return ["busybox", "httpd", "-f", "-p", "80", "-h", os.fspath(www)]


# -- tests ----------------------------------------------------------------------------------------


def test_host_reaches_published_port_on_localhost(boxes: Callable[..., Box], www: Path) -> None:
    net = network.create_network("web")
    api = boxes("api", _httpd(www))
    port = _free_port()
    att = network.attach(api.cid, api.pid, "web", "api", [], [parse_port(f"{port}:80")])

    assert att.gateway == net["gateway"] and att.prefixlen == 24 and att.host_veth.startswith("dbx")
    assert Path(f"/sys/class/net/{att.host_veth}/master").resolve().name == net["bridge"]
    addrs = api.run("ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    assert f"inet {att.ip}/24" in addrs
    assert f"default via {att.gateway} dev eth0" in api.run("ip", "route").stdout
    assert "state UP" in api.run("ip", "link", "show", "lo").stdout or "UNKNOWN" in api.run("ip", "link", "show", "lo").stdout

    _wait(lambda: _tcp_open(att.ip, 80), what="httpd in the box")
    assert _http_get(f"http://127.0.0.1:{port}/") == "hello from the box\n"
    assert _http_get(f"http://localhost:{port}/") == "hello from the box\n"
    # bound to 127.0.0.1 only: the host's other addresses do not answer on that port
    assert not _tcp_open("192.0.2.2", port) if _has_addr("192.0.2.2") else True


def _has_addr(ip: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((ip, 0))
            return True
        except OSError:
            return False


def test_containers_reach_each_other_by_name(boxes: Callable[..., Box], www: Path) -> None:
    network.create_network("shop")
    api = boxes("api", _httpd(www))
    cli = boxes("cli", ["sleep", "300"])
    port = _free_port()
    a = network.attach(api.cid, api.pid, "shop", "api", ["backend"], [parse_port(f"0.0.0.0:{port}:80")])
    c = network.attach(cli.cid, cli.pid, "shop", "cli", [], [])
    hosts = cli.run("cat", "/etc/hosts").stdout
    assert f"{a.ip}\tapi backend" in hosts and f"{c.ip}\tcli" in hosts
    assert f"{c.ip}\tcli" in api.run("cat", "/etc/hosts").stdout  # the earlier box learnt of the later one

    _wait(lambda: _tcp_open(a.ip, 80), what="httpd in the box")
    assert cli.wget("http://api/").stdout == "hello from the box\n"
    assert cli.wget("http://backend/").stdout == "hello from the box\n"
    # hairpin: a box reaching a neighbour through the host's published port
    assert cli.wget(f"http://{c.gateway}:{port}/").stdout == "hello from the box\n"

    network.detach(api.cid)
    assert "api" not in cli.run("cat", "/etc/hosts").stdout  # updated in place, seen through the bind mount
    assert not Path(f"/sys/class/net/{a.host_veth}").exists()


@dataclass
class Upstream:
    pid: int
    host_ip: str  # the host's end of the link
    ip: str  # the upstream namespace's address
    port: int  # its HTTP server answers with the client's address

    def run(self, *argv: str, timeout: float = 8) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(["nsenter", f"--target={self.pid}", "--net", *argv],
                                  capture_output=True, text=True, timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(e.cmd, 124, "", "timeout")


@pytest.fixture
def upstream(root: Path) -> Iterator[Upstream]:
    """A namespace made by the test that plays "the outside" (or a LAN peer): a veth pair from the
    host, 10.250.N.2 (host) <-> 10.250.N.1 (upstream), and no route back to any box subnet."""
    import ipaddress

    from devbox.runtime import ipam

    taken = [r for r, _ in ipam.host_routes()]
    free = [n for n in range(256) if not any(ipaddress.ip_network(f"10.250.{n}.0/30").overlaps(t) for t in taken)]
    n = random.choice(free)
    host_ip, up_ip = f"10.250.{n}.2", f"10.250.{n}.1"
    tag = uuid.uuid4().hex[:6]
    hv, pv = f"tstu{tag}", f"tstp{tag}"
    proc = subprocess.Popen(["unshare", "--net", "--", sys.executable, "-c", UPSTREAM_HTTP, "8000"])
    try:
        host_netns = os.stat("/proc/self/ns/net").st_ino
        _wait(lambda: os.stat(f"/proc/{proc.pid}/ns/net").st_ino != host_netns, what="upstream netns")
        _ip("link", "add", hv, "type", "veth", "peer", "name", pv)
        _ip("link", "set", pv, "netns", str(proc.pid))
        _ip("addr", "add", f"{host_ip}/30", "dev", hv)
        _ip("link", "set", hv, "up")
        up = Upstream(proc.pid, host_ip, up_ip, 8000)
        for cmd in (["addr", "add", f"{up_ip}/30", "dev", pv], ["link", "set", pv, "up"], ["link", "set", "lo", "up"]):
            assert up.run("ip", *cmd).returncode == 0
        _wait(lambda: _tcp_open(up_ip, 8000), what="upstream server")
        yield up
    finally:
        proc.kill()
        proc.wait()
        subprocess.run(["ip", "link", "del", hv], capture_output=True)


def test_outbound_is_masqueraded(boxes: Callable[..., Box], upstream: Upstream) -> None:
    """The upstream has no route back to the box subnet, so an answer proves the masquerade, and the
    source it sees is the host's address."""
    network.create_network("out")
    box = boxes("box", ["sleep", "300"])
    att = network.attach(box.cid, box.pid, "out", "box", [], [])
    r = box.wget(f"http://{upstream.ip}:{upstream.port}/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == upstream.host_ip, "the upstream must see the host's address, not " + att.ip


def test_publish_on_lan_is_opt_in(boxes: Callable[..., Box], upstream: Upstream, www: Path) -> None:
    """Seen from a LAN peer (the upstream namespace, reaching the host at upstream.host_ip):
    0.0.0.0 and host-address ports answer; the default (127.0.0.1) does not."""
    network.create_network("lan")
    box = boxes("web", _httpd(www))
    p_any, p_addr, p_lo = _free_port(), _free_port(), _free_port()
    specs = [f"0.0.0.0:{p_any}:80", f"{upstream.host_ip}:{p_addr}:80", f"{p_lo}:80"]
    att = network.attach(box.cid, box.pid, "lan", "web", [], [parse_port(s) for s in specs])
    _wait(lambda: _tcp_open(att.ip, 80), what="httpd in the box")

    def peer_get(port: int) -> str:
        return upstream.run("timeout", "3", "busybox", "wget", "-qO-", f"http://{upstream.host_ip}:{port}/").stdout

    assert peer_get(p_any) == "hello from the box\n"
    assert peer_get(p_addr) == "hello from the box\n"
    assert peer_get(p_lo) == ""
    # and from the host itself, each on the address it was published on
    assert _http_get(f"http://127.0.0.1:{p_any}/") == "hello from the box\n"
    assert _http_get(f"http://{upstream.host_ip}:{p_addr}/") == "hello from the box\n"
    assert _http_get(f"http://127.0.0.1:{p_lo}/") == "hello from the box\n"


class _LoopbackService:
    """An HTTP-ish listener on the host's 127.0.0.1 that records who connected."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.peers: list[str] = []
        self.stop = False
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                continue
            self.peers.append(peer[0])
            with conn:
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\nsecret\n")

    def close(self) -> None:
        self.stop = True
        self.t.join()
        self.sock.close()


LOOPBACK_TRICK = (
    # what a hostile box would do: send to 127.0.0.1 with the gateway as next hop
    ["sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1", "net.ipv4.conf.all.route_localnet=1"],
    ["ip", "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local"],
    ["ip", "route", "del", "local", "127.0.0.1", "dev", "lo", "table", "local"],
)


def _udp_listener() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(1.5)
    return s


def _try_loopback_trick(box: Box, gateway: str, udp_port: int) -> None:
    for cmd in LOOPBACK_TRICK:
        box.run(*cmd)
    box.run("ip", "route", "add", "127.0.0.1/32", "via", gateway, "dev", "eth0", "onlink")
    assert f"via {gateway}" in box.run("ip", "route", "get", "127.0.0.1").stdout
    send = f"import socket; s = socket.socket(2, 2); [s.sendto(b'intrusion', ('127.0.0.1', {udp_port})) for _ in range(3)]"
    box.run(sys.executable, "-c", send)
    box.run("timeout", "2", "busybox", "nc", "127.0.0.1", str(udp_port))  # and a TCP SYN or three


def _received(s: socket.socket) -> bytes:
    try:
        return s.recv(100)
    except TimeoutError:
        return b""


@pytest.mark.parametrize("with_drop_rule", [True, False], ids=["protected", "control-without-drop-rule"])
def test_box_cannot_reach_host_loopback_services(
    boxes: Callable[..., Box], monkeypatch: pytest.MonkeyPatch, with_drop_rule: bool
) -> None:
    """The bridge has route_localnet=1 (published ports on 127.0.0.1 need it), so a box that routes
    127.0.0.1 via its gateway gets packets delivered to host services bound to loopback, unless
    devbox's `iifname BRIDGE ip daddr 127.0.0.0/8 drop` stops them. The control run (rule left out)
    proves the trick gets packets to the host's local input (counted by a table the test adds)
    and therefore that the rule is what protects."""
    if not with_drop_rule:
        render = nft.render
        monkeypatch.setattr(nft, "render", lambda nets, t=None: [ln for ln in render(nets, t) if "127.0.0.0/8 drop" not in ln])
    svc = _LoopbackService()
    udp = _udp_listener()
    probe = f"dbxtest_{uuid.uuid4().hex[:6]}"
    try:
        assert _http_get(f"http://127.0.0.1:{svc.port}/") == "secret\n"  # control: the host can
        svc.peers.clear()
        network.create_network("iso")
        box = boxes("box", ["sleep", "300"])
        att = network.attach(box.cid, box.pid, "iso", "box", [], [])
        br = network.get_network("iso")["bridge"]
        nft.run_nft(
            f"table ip {probe} {{ chain input {{ type filter hook input priority -400; policy accept;\n"
            f"  iifname \"{br}\" ip daddr 127.0.0.0/8 counter\n}}\n}}\n"
        )
        # the gateway address is the host, but a loopback-bound service is not listening there
        assert box.wget(f"http://{att.gateway}:{svc.port}/", timeout=2).stdout == ""
        _try_loopback_trick(box, att.gateway, udp.getsockname()[1])
        got = _received(udp)
        listed = subprocess.run(["nft", "list", "table", "ip", probe], capture_output=True, text=True).stdout
        delivered = int(listed.split("counter packets ")[1].split()[0])
        if with_drop_rule:
            assert delivered == 0 and got == b"" and svc.peers == []
        else:
            assert delivered >= 3, listed
    finally:
        subprocess.run(["nft", "delete", "table", "ip", probe], capture_output=True)
        udp.close()
        svc.close()


def test_networks_cannot_reach_each_other(boxes: Callable[..., Box], www: Path) -> None:
    network.create_network("neta")
    network.create_network("netb")
    a = boxes("a", _httpd(www))
    b = boxes("b", _httpd(www))
    port = _free_port()
    aa = network.attach(a.cid, a.pid, "neta", "a", [], [])
    bb = network.attach(b.cid, b.pid, "netb", "b", [], [parse_port(f"0.0.0.0:{port}:80")])
    _wait(lambda: _tcp_open(aa.ip, 80) and _tcp_open(bb.ip, 80), what="both httpds")
    assert _http_get(f"http://127.0.0.1:{port}/") == "hello from the box\n"  # control: published
    assert a.wget(f"http://{bb.ip}/", timeout=2).stdout == ""
    assert b.wget(f"http://{aa.ip}/", timeout=2).stdout == ""
    # nor through B's port published on all host addresses (here: A's own gateway address)
    assert a.wget(f"http://{aa.gateway}:{port}/", timeout=2).stdout == ""
    assert "b" not in a.run("cat", "/etc/hosts").stdout.split()
    # and each still reaches its own gateway
    assert a.run("busybox", "ping", "-c", "1", "-W", "2", aa.gateway).returncode == 0


def test_port_conflict_names_the_holder(boxes: Callable[..., Box]) -> None:
    network.create_network("pc")
    box = boxes("box", ["sleep", "300"])
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(NetworkError) as e:
            network.attach(box.cid, box.pid, "pc", "box", [], [parse_port(f"{port}:80")])
    assert e.value.message.startswith(f"host port {port}/tcp is already in use by ")
    assert f"(pid {os.getpid()})" in e.value.message
    # nothing was done: no veth, no lease, no rules for it
    assert _tagged_links() == [network.get_network("pc")["bridge"]]
    assert network.get_network("pc")["containers"] == {}
    assert f"dbx ctr {box.cid}" not in nft.comments()
    assert box.run("ip", "-o", "link").stdout.count(":") >= 1 and "eth0" not in box.run("ip", "-o", "link").stdout


def test_udp_publish(boxes: Callable[..., Box]) -> None:
    network.create_network("udp")
    box = boxes("dns", [sys.executable, "-c", UDP_ECHO, "53"])
    port = _free_port(socket.SOCK_DGRAM)
    network.attach(box.cid, box.pid, "udp", "dns", [], [parse_port(f"{port}:53/udp")])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        reply = b""
        for _ in range(20):  # the server may still be starting
            s.sendto(b"ping", ("127.0.0.1", port))
            try:
                reply = s.recv(100)
                break
            except TimeoutError:
                continue
    assert reply == b"echo:ping"


def test_detach_and_network_rm_leave_nothing(boxes: Callable[..., Box], www: Path) -> None:
    net = network.create_network("tidy")
    box = boxes("api", _httpd(www))
    port = _free_port()
    att = network.attach(box.cid, box.pid, "tidy", "api", [], [parse_port(f"{port}:80"), parse_port(f"{port}:80/udp")])
    assert sorted(_tagged_links()) == sorted([net["bridge"], att.host_veth])
    assert nft.comments().count(f"dbx ctr {box.cid}") == 2  # loopback-bound: one output rule each
    with pytest.raises(NetworkError, match="has containers attached"):
        network.remove_network("tidy")
    network.detach(box.cid)
    network.detach(box.cid)
    assert _tagged_links() == [net["bridge"]]
    assert f"dbx ctr {box.cid}" not in nft.comments()
    network.remove_network("tidy")
    assert _tagged_links() == [] and nft.list_table() is None
    assert list((root_dir := Path(network.paths.networks_dir())).glob("*.json")) == [], root_dir


def test_reconcile_after_crash_and_reboot(boxes: Callable[..., Box], www: Path) -> None:
    net = network.create_network("crash")
    dead = boxes("dead", ["sleep", "300"])
    live = boxes("live", _httpd(www))
    p1, p2 = _free_port(), _free_port()
    d = network.attach(dead.cid, dead.pid, "crash", "dead", [], [parse_port(f"{p1}:80")])
    lv = network.attach(live.cid, live.pid, "crash", "live", [], [parse_port(f"{p2}:80")])
    # devbox killed -9 halfway through some other attach: a tagged veth that no lease explains
    orphan = "dbx" + uuid.uuid4().hex[:12]
    _ip("link", "add", orphan, "type", "veth", "peer", "name", "tst" + orphan[3:])
    _ip("link", "set", orphan, "alias", network.link_tag())
    # the "dead" container is gone without a detach (its engine state says so: not in the live set)
    assert d.host_veth in _tagged_links()
    network.reconcile({live.cid})
    links = _tagged_links()
    assert orphan not in links and d.host_veth not in links and lv.host_veth in links
    assert list(network.get_network("crash")["containers"]) == [live.cid]
    comments = nft.comments()
    assert f"dbx ctr {dead.cid}" not in comments and f"dbx ctr {live.cid}" in comments
    assert "dead" not in live.run("cat", "/etc/hosts").stdout

    # "reboot": the bridge and the table are gone; the next reconcile puts them back
    _ip("link", "del", net["bridge"])
    subprocess.run(["nft", "delete", "table", "ip", nft.table_name()], check=True)
    network.reconcile({live.cid})
    assert Path(f"/sys/class/net/{net['bridge']}").exists()
    assert Path(f"/sys/class/net/{lv.host_veth}/master").resolve().name == net["bridge"]
    assert "dbx net crash" in nft.comments() and f"dbx ctr {live.cid}" in nft.comments()
    _wait(lambda: _tcp_open(lv.ip, 80), what="httpd in the box")
    assert _http_get(f"http://127.0.0.1:{p2}/") == "hello from the box\n"


def test_reconcile_without_state(boxes: Callable[..., Box]) -> None:
    """State files lost entirely (say, a wiped state root): tagged links and the table still go."""
    net = network.create_network("lost")
    box = boxes("box", ["sleep", "300"])
    att = network.attach(box.cid, box.pid, "lost", "box", [], [parse_port(f"{_free_port()}:80")])
    for f in Path(network.paths.networks_dir()).glob("*.json"):
        f.unlink()
    network.reconcile(set())
    assert net["bridge"] not in _tagged_links() and att.host_veth not in _tagged_links()
    assert nft.list_table() is None


def test_attach_plumbing_is_complete(boxes: Callable[..., Box]) -> None:
    """What devbox's own rtnetlink client set up, as `ip` sees it: the host veth on the bridge, up and
    tagged; inside, lo and eth0 up, the lease's address, the default route via the gateway, the mac."""
    net = network.create_network("plumb")
    box = boxes("api", ["sleep", "60"])
    att = network.attach(box.cid, box.pid, "plumb", "api", [], [])
    host = subprocess.run(["ip", "-d", "link", "show", att.host_veth], capture_output=True, text=True, check=True).stdout
    assert f"master {net['bridge']}" in host and ",UP," in host, host
    assert f"alias {network.link_tag()}" in host, host
    inside = box.run("ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    assert f"inet {att.ip}/{att.prefixlen}" in inside, inside
    links = box.run("ip", "-o", "link", "show").stdout
    assert "lo: <LOOPBACK,UP" in links and ",UP" in links.split("eth0@")[1].split("\n")[0], links
    assert f"link/ether {att.mac}" in links, links
    route = box.run("ip", "route", "show", "default").stdout
    assert route.startswith(f"default via {att.gateway} dev eth0"), route
    assert box.run("busybox", "ping", "-c", "1", "-W", "2", att.gateway).returncode == 0


def test_rtnl_reports_kernel_errors() -> None:
    """Kernel errors come back as OSError with the kernel's errno and message."""
    from devbox.runtime import rtnl

    with rtnl.Netlink() as nl:
        assert nl.get_link("dbxnosuchlink0") is None
        assert nl.delete_link("dbxnosuchlink0") is False
        lo = nl.index("lo")
        with pytest.raises(OSError) as e:
            nl.add_address(lo, "127.0.0.1", 8)  # already there
        assert e.value.errno == 17  # EEXIST
        fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            with pytest.raises(OSError) as e:
                nl.add_veth("dbxrtnltest0", "dbxrtnltest1", fd, 999999)
        finally:
            os.close(fd)
        assert e.value.errno in (19, 22), e.value  # no such master: ENODEV or EINVAL, as the kernel says
        assert not os.path.exists("/sys/class/net/dbxrtnltest0") and not os.path.exists("/sys/class/net/dbxrtnltest1")


@pytest.mark.parametrize("via", ["libnftables", "nft-command"])
def test_nft_transaction_and_errors(root: Path, monkeypatch: pytest.MonkeyPatch, via: str) -> None:
    """Both ways of applying the table (libnftables in-process; `nft -f -` when the library cannot be
    loaded) install the same rules, and a bad script fails as one line naming nft's error while
    leaving the kernel's rule set as it was (one transaction)."""
    monkeypatch.setenv("DEVBOX_NFT_COMMAND", "1" if via == "nft-command" else "0")
    monkeypatch.setattr(nft, "_LIB", None)
    network.create_network("rules")
    assert "dbx net rules" in nft.comments()
    assert (nft._library() is None) == (via == "nft-command")
    before = nft.list_table()
    t = nft.table_name()
    bad = f"add table ip {t}\nadd chain ip {t} dbxbad\nadd rule ip {t} dbxbad tcp dport nosuchservice accept\n"
    with pytest.raises(NetworkError) as e:
        nft.run_nft(bad)
    msg = str(e.value)
    assert msg.startswith("nft failed: Could not resolve service") and "\n" not in msg, msg
    if via == "nft-command":
        assert "in `add rule ip" in msg, msg
    assert nft.list_table() == before


def test_apply_ports_rewrites_only_the_dnat_chains_and_falls_back(root: Path) -> None:
    """apply_ports (a container with -p starting or stopping) rewrites the two DNAT chains alone;
    without the table (deleted by hand) it applies the whole table instead."""
    network.create_network("portsonly")
    nets = network._load_all()
    lease = {"ip": "10.213.9.9", "name": "x", "aliases": [], "host_veth": "dbxnone", "active": True,
             "ports": [{"host_ip": "127.0.0.1", "host_port": 18999, "container_port": 80, "proto": "tcp"},
                       {"host_ip": "0.0.0.0", "host_port": 18998, "container_port": 53, "proto": "udp"}]}  # fmt: skip
    with_ports = [{**nets[0], "leases": {"c0ffee": lease}}]
    nft.apply_ports(with_ports)
    comments = nft.comments()
    assert comments.count("dbx ctr c0ffee") == 3  # output: both; prerouting: the 0.0.0.0 one
    assert "dbx net portsonly" in comments
    nft.apply_ports(nets)  # the container is gone
    comments = nft.comments()
    assert "dbx ctr c0ffee" not in comments and "dbx net portsonly" in comments
    subprocess.run(["nft", "delete", "table", "ip", nft.table_name()], check=True)
    nft.apply_ports(with_ports)  # no table: falls back to the whole one
    comments = nft.comments()
    assert comments.count("dbx ctr c0ffee") == 3 and "dbx net portsonly" in comments
