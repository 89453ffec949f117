"""The main job through the real `devbox` command: a three-box project (Python 3.11 on bookworm,
Python 3.13 on trixie, a Redis database box), reachable from the host and by name, logs, exec, halt
and up keeping data, no-change up, destroy leaving nothing behind, and the Devboxfile errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import cgroup_dirs_for, devbox, ok, pid_alive

pytestmark = pytest.mark.root

SERVER = r'''
import http.server, socket, sys

def redis(*args):
    s = socket.create_connection(("db", 6379), timeout=5)
    s.sendall(("*%d\r\n" % len(args) + "".join("$%d\r\n%s\r\n" % (len(a), a) for a in args)).encode())
    line = s.makefile("rb").readline().decode().strip()
    s.close()
    return line

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        hits = redis("INCR", "hits:" + self.server.name)
        body = "python %s.%s on %s, hits %s\n" % (sys.version_info[0], sys.version_info[1], self.server.name, hits[1:])
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())

srv = http.server.HTTPServer(("0.0.0.0", 8000), H)
srv.name = socket.gethostname()
print("serving on 8000", flush=True)
srv.serve_forever()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def devboxfile(p1: int, p2: int, name: str) -> str:
    return f"""
name: {name}
boxes:
  db:
    base: debian:bookworm
    packages: [redis-server]
    services:
      redis:
        command: redis-server --bind 0.0.0.0 --protected-mode no --dir /var/lib/redis --appendonly yes --appendfsync always
        user: redis
        health: {{tcp: 6379}}
  old:
    base: debian:bookworm
    mounts: ["./app:/srv/app"]
    ports: ["{p1}:8000"]
    depends_on: [db]
    services:
      web:
        command: python3 /srv/app/server.py
        health: {{http: "8000/"}}
  new:
    base: debian:trixie
    mounts: ["./app:/srv/app"]
    ports: ["{p2}:8000"]
    depends_on: [db]
    services:
      web:
        command: python3 /srv/app/server.py
        health: {{http: "8000/"}}
"""


def get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
        return r.read().decode()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, debian_image: str) -> Iterator[tuple[Path, int, int]]:
    d = tmp_path_factory.mktemp("proj")
    (d / "app").mkdir()
    (d / "app" / "server.py").write_text(SERVER)
    p1, p2 = free_port(), free_port()
    (d / "Devboxfile").write_text(devboxfile(p1, p2, "e2eproj"))
    yield d, p1, p2
    devbox("destroy", "-f", cwd=d, timeout=300)


def _nft_rules() -> str:
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout


def test_up_reach_logs_exec_halt_destroy(project: tuple[Path, int, int]) -> None:
    d, p1, p2 = project
    r = devbox("up", cwd=d, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"localhost:{p1}" in r.stdout and f"localhost:{p2}" in r.stdout
    # from the host, through the published ports; each app reaches the db box by name
    first = get(p1)
    assert first.startswith("python 3.11 on old, hits ")
    assert get(p2).startswith("python 3.13 on new, hits ")
    # box to box by name, over the project network
    r = devbox("exec", "old", "--", "python3", "-c",
               "import urllib.request; print(urllib.request.urlopen('http://new:8000/').read().decode())",
               cwd=d)  # fmt: skip
    assert r.returncode == 0 and "python 3.13 on new" in r.stdout, r.stderr
    # status
    st = json.loads(ok("status", "--json", cwd=d))
    boxes = {b["box"]: b for b in st["boxes"]}
    assert set(boxes) == {"db", "old", "new"}
    for b in boxes.values():
        assert b["state"] == "running"
        assert all(s["state"] == "RUNNING" and s["health"] == "healthy" for s in b["services"]), b
    web_pid = boxes["old"]["services"][0]["pid"]
    # a shell in the box (bash, found through an exec in the box), fed from a pipe
    r = devbox("shell", "old", input="echo shell-ok $BASH_VERSION $(hostname)\n", cwd=d)
    assert r.returncode == 0 and r.stdout.startswith("shell-ok 5.") and "old" in r.stdout, r.stderr
    # logs of one service
    assert "serving on 8000" in ok("logs", "old/web", cwd=d)
    assert "GET / HTTP" in ok("logs", "old/web", cwd=d)
    # a no-change up does nothing and is quick
    assert [line.split(":")[1].strip() for line in ok("up", "--dry-run", cwd=d).splitlines()] == ["none (up to date)"] * 3
    t0 = time.monotonic()
    ok("up", cwd=d)
    assert time.monotonic() - t0 < 5
    st = json.loads(ok("status", "--json", cwd=d))
    assert {b["box"]: b for b in st["boxes"]}["old"]["services"][0]["pid"] == web_pid, "no-change up restarted a service"
    # halt then up keeps data (redis appends to its file in the box's writable layer)
    hits_before = int(get(p1).rsplit(" ", 1)[1])
    cids = {b: c for b, c in ((b["box"], b["container"]) for b in st["boxes"])}
    ok("halt", cwd=d)
    st = json.loads(ok("status", "--json", cwd=d))
    assert all(b["state"] == "halted" for b in st["boxes"])
    with pytest.raises(OSError):
        get(p1)
    ok("up", cwd=d, timeout=300)
    # the counter survived (the health check's own GET counts too, so it is not exactly +1)
    assert int(get(p1).rsplit(" ", 1)[1]) > hits_before
    st = json.loads(ok("status", "--json", cwd=d))
    assert {b["box"]: b["container"] for b in st["boxes"]} == cids, "halt/up must keep the same boxes"
    # destroy leaves nothing behind
    pids = [c["pid"] for c in json.loads(ok("ps", "--json")) if c["id"] in cids.values()]  # host pids
    assert len(pids) == 3
    ok("destroy", "-f", cwd=d)
    st = json.loads(ok("status", "--json", cwd=d))
    assert all(b["state"] == "not created" for b in st["boxes"])
    for cid in cids.values():
        assert not cgroup_dirs_for(cid)
        assert not (Path(os.environ["DEVBOX_ROOT"]) / "containers" / cid).exists()
        assert cid[:12] not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        with open("/proc/self/mountinfo") as f:
            assert cid not in f.read()
    assert "dbx-e2eproj" not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "e2eproj" not in _nft_rules()
    for p in pids:
        assert not pid_alive(p)


def test_service_that_fails_fails_up_with_its_log(tmp_path: Path, debian_image: str) -> None:
    (tmp_path / "Devboxfile").write_text("""
name: failing
boxes:
  app:
    base: debian:bookworm
    services:
      broken:
        command: sh -c 'echo "cannot open config /etc/nope.conf" >&2; exit 3'
""")
    try:
        r = devbox("up", cwd=tmp_path, timeout=300)
        assert r.returncode != 0
        assert "broken" in r.stderr and "cannot open config /etc/nope.conf" in r.stderr
    finally:
        devbox("destroy", "-f", cwd=tmp_path, timeout=120)


def test_port_in_use_is_named(tmp_path: Path, debian_image: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        (tmp_path / "Devboxfile").write_text(f"""
name: portclash
boxes:
  app:
    base: debian:bookworm
    ports: ["{port}:8000"]
    services:
      web: {{command: python3 -m http.server 8000}}
""")
        try:
            r = devbox("up", cwd=tmp_path, timeout=300)
            assert r.returncode != 0
            assert str(port) in r.stderr and "in use" in r.stderr
            # the box this up created and could not start is not left behind
            assert "portclash-app" not in ok("ps", "-a")
        finally:
            devbox("destroy", "-f", cwd=tmp_path, timeout=120)
    assert "portclash" not in _nft_rules()


BAD = [
    ("name: x\nboxes:\n  web:\n    base: debian:bookworm\n    prots: ['80:80']\n", "Devboxfile:5", "did you mean 'ports'"),
    ("name: x\nboxes:\n  web:\n    base: debian:bookworm\n    ports: ['80:80:80:80']\n", "Devboxfile:5", "ports[0]"),
    ("name: x\nboxes:\n  web:\n    base: debian:bookworm\n    depends_on: [db]\n", "Devboxfile:5", "db"),
    ("name: x\nboxes:\n  a:\n    base: debian:bookworm\n    depends_on: [b]\n  b:\n    base: debian:bookworm\n"
     "    depends_on: [a]\n", "Devboxfile:", "cycle"),
    ("name: x\nboxes:\n  web:\n    base: debian:bookworm\n    resources: {memory: 12q}\n", "Devboxfile:5", "12q"),
    ("name: x\nboxes: [\n", "Devboxfile:", ""),
]  # fmt: skip


@pytest.mark.parametrize("text,where,what", BAD)
def test_bad_devboxfile(tmp_path: Path, text: str, where: str, what: str) -> None:
    (tmp_path / "Devboxfile").write_text(text)
    r = devbox("up", cwd=tmp_path)
    assert r.returncode not in (0, 1)
    assert r.stderr.startswith("devbox: error: ") and where in r.stderr and what in r.stderr, r.stderr
    assert r.stderr.count("\n") <= 2


def test_no_devboxfile(tmp_path: Path) -> None:
    r = devbox("up", cwd=tmp_path)
    assert r.returncode not in (0, 1) and "Devboxfile" in r.stderr and "devbox init" in r.stderr


def test_init_writes_a_loadable_devboxfile(tmp_path: Path) -> None:
    for template in ("python", "tomcat", "node", "blank"):
        d = tmp_path / template
        d.mkdir()
        ok("init", "--template", template, cwd=d)
        assert (d / "Devboxfile").exists()
        r = devbox("up", "--dry-run", cwd=d)
        assert r.returncode == 0, r.stderr
