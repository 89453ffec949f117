"""Networking through the real `devbox` command: network create/ls/inspect/rm, run --network/-p,
names between containers, --network none/host, port conflicts, and nothing left behind.

Traffic goes only to 127.0.0.1 and to the networks the tests create.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import DEVBOX, devbox, ok, wait_for

pytestmark = [pytest.mark.root, pytest.mark.network]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback only
            return r.read().decode()
    except OSError:
        return ""


def _links_with_alias(prefix: str = "devbox:") -> list[str]:
    out = []
    for n in os.listdir("/sys/class/net"):
        try:
            with open(f"/sys/class/net/{n}/ifalias") as f:
                if f.read().startswith(prefix):
                    out.append(n)
        except OSError:
            pass
    return out


@pytest.fixture
def net(busybox_image: str) -> Iterator[Callable[..., str]]:
    """Factory: net(subnet=None) -> name of a fresh network; containers and networks go at the end."""
    made: list[str] = []

    def make(subnet: str | None = None) -> str:
        name = "t" + uuid.uuid4().hex[:8]
        ok("network", "create", name, *(["--subnet", subnet] if subnet else []))
        made.append(name)
        return name

    yield make
    for name in made:
        info = json.loads(devbox("network", "inspect", name).stdout or "[{}]")[0]
        for c in (info.get("containers") or {}).values():
            devbox("rm", "-f", c["name"])
        devbox("network", "rm", "-f", name)


@pytest.fixture
def names() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for n in made:
        devbox("rm", "-f", n)


def test_publish_and_names(busybox_image: str, net: Callable[..., str], names: list[str]) -> None:
    n = net()
    api = "api" + uuid.uuid4().hex[:6]
    names.append(api)
    port = _free_port()
    ok("run", "-d", "--name", api, "--network", n, "-p", f"127.0.0.1:{port}:80", busybox_image,
       "httpd", "-f", "-p", "80", "-h", "/etc")  # fmt: skip
    # from the host, on localhost
    body = wait_for(lambda: _get(f"http://127.0.0.1:{port}/hostname"), what="the published port")
    assert isinstance(body, str) and body.strip()
    # from another container, by name
    r = devbox("run", "--rm", "--network", n, busybox_image, "wget", "-qO-", f"http://{api}/hostname")
    assert r.returncode == 0, r.stderr
    assert r.stdout == body
    # inspect shows the container with its address and port
    info = json.loads(ok("network", "inspect", n))[0]
    (c,) = [c for c in info["containers"].values() if c["name"] == api]
    assert c["ip"].startswith(info["subnet"].rsplit(".", 1)[0] + ".")
    assert c["ports"] == [{"container_port": 80, "host_ip": "127.0.0.1", "host_port": port, "proto": "tcp"}]
    # a network is not removed under its containers
    r = devbox("network", "rm", n)
    assert r.returncode == 125 and "has containers attached" in r.stderr
    ok("rm", "-f", api)
    assert _get(f"http://127.0.0.1:{port}/hostname") == ""
    assert json.loads(ok("network", "inspect", n))[0]["containers"] == {}


def test_network_create_ls_rm(busybox_image: str, net: Callable[..., str]) -> None:
    n = net("10.213.200.0/24")
    nets = {x["name"]: x for x in json.loads(ok("network", "ls", "--json"))}
    assert nets[n]["subnet"] == "10.213.200.0/24" and nets[n]["gateway"] == "10.213.200.1"
    bridge = nets[n]["bridge"]
    assert bridge.startswith("dbx-") and len(bridge) <= 15 and os.path.exists(f"/sys/class/net/{bridge}")
    assert n in ok("network", "ls")
    r = devbox("network", "create", "other" + n, "--subnet", "10.213.200.128/25")
    assert r.returncode == 125 and f"overlaps 10.213.200.0/24 (devbox network {n})" in r.stderr
    r = devbox("network", "create", n)
    assert r.returncode == 125 and "already exists" in r.stderr
    ok("network", "rm", n)
    assert not os.path.exists(f"/sys/class/net/{bridge}")
    assert n not in ok("network", "ls")
    r = devbox("network", "rm", n)
    assert r.returncode == 125 and "no network named" in r.stderr


def test_network_none_and_host(busybox_image: str) -> None:
    r = devbox("run", "--rm", "--network", "none", busybox_image, "ip", "-o", "link")
    assert r.returncode == 0, r.stderr
    assert [ln.split(":")[1].strip() for ln in r.stdout.splitlines()] == ["lo"]
    r = devbox("run", "--rm", "--network", "host", busybox_image, "ip", "-o", "link")
    assert r.returncode == 0, r.stderr
    host_links = sorted(os.listdir("/sys/class/net"))
    assert "eth0" in r.stdout or any(x in r.stdout for x in host_links if x != "lo")


def test_port_conflict(busybox_image: str, net: Callable[..., str]) -> None:
    n = net()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = devbox("run", "--rm", "--network", n, "-p", f"{port}:80", busybox_image, "true")
    assert r.returncode == 125
    assert f"host port {port}/tcp is already in use by " in r.stderr and f"(pid {os.getpid()})" in r.stderr
    assert json.loads(ok("network", "inspect", n))[0]["containers"] == {}


def test_default_network(busybox_image: str) -> None:
    r = devbox("run", "--rm", busybox_image, "sh", "-c", "ip -4 -o addr show dev eth0; ip route; cat /etc/resolv.conf")
    assert r.returncode == 0, r.stderr
    info = json.loads(ok("network", "inspect", "default"))[0]
    gw = info["gateway"]
    assert f"default via {gw} dev eth0" in r.stdout
    assert "nameserver " in r.stdout and "nameserver 127." not in r.stdout
    assert info["containers"] == {}
    devbox("network", "rm", "default")  # only succeeds when no other test uses it


# Modules whose import costs milliseconds each and that `devbox run` does without (docs/architecture.md,
# "Performance decisions"); pyroute2 is for network create/rm, not for a run on an existing network.
HEAVY_MODULES = {"pathlib", "re", "enum", "json", "typing", "dataclasses", "inspect", "socket", "signal",
                 "threading", "hashlib", "shutil", "tempfile", "subprocess", "selectors", "pyroute2",
                 "ipaddress", "contextlib", "collections", "functools", "warnings"}  # fmt: skip


def test_run_with_a_published_port_imports_no_heavy_module(busybox_image: str, net: Callable[..., str]) -> None:
    """The real command, through the launcher setup.sh writes, under -X importtime: the modules a
    `run --rm --network NET -p` loads, on a network that exists, include none of HEAVY_MODULES."""
    n = net()
    port = _free_port()
    launcher = Path(DEVBOX)
    python = launcher.read_text().splitlines()[0].removeprefix("#!").split()[0]
    r = subprocess.run([python, "-S", "-X", "importtime", str(launcher), "run", "--rm", "--network", n,
                        "-p", f"{port}:80", busybox_image, "/bin/true"],
                       capture_output=True, text=True, timeout=60, env=os.environ)  # fmt: skip
    assert r.returncode == 0, r.stderr
    loaded = {ln.rsplit("|", 1)[1].strip() for ln in r.stderr.splitlines() if ln.startswith("import time:")}
    assert {"devbox.runtime.network", "devbox.runtime.nft", "devbox.runtime.container"} <= loaded
    heavy = {m for m in loaded if m.split(".")[0] in HEAVY_MODULES}
    assert heavy == set(), f"devbox run imported {sorted(heavy)}"


def test_rm_leaves_no_veth_lease_or_rule(busybox_image: str, net: Callable[..., str]) -> None:
    """A --rm run with a published port leaves no lease and no port rule behind, and its veth goes
    with its netns (devbox leaves that deletion to the kernel: it is gone within moments)."""
    n = net()
    veths_before = {v for v in _links_with_alias() if not v.startswith("dbx-")}
    port = _free_port()
    r = devbox("run", "--rm", "--network", n, "-p", f"{port}:80", busybox_image, "sh", "-c", "ip -o link show eth0")
    assert r.returncode == 0, r.stderr
    assert json.loads(ok("network", "inspect", n))[0]["containers"] == {}
    table = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    assert f"dport {port} " not in table
    wait_for(lambda: {v for v in _links_with_alias() if not v.startswith("dbx-")} <= veths_before, timeout=5,
             what="the container's veth to go with its netns")  # fmt: skip
