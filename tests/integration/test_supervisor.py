"""A real supervisord (the venv's), driven through devbox.services: config, client, health.

Runs on the host, no root needed: the socket and logs live in tmp_path. supervisord is killed by its
pid in the fixture's finalizer.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devbox import devboxfile
from devbox.errors import ServiceError
from devbox.model import Box
from devbox.services import config, health
from devbox.services.client import Fault, Supervisor, Unreachable

VENV_SUPERVISORD = Path(sys.executable).parent / "supervisord"
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    def __init__(self, tmp: Path, box: Box) -> None:
        self.tmp = tmp
        self.run_dir = tmp / "run"
        self.log_dir = tmp / "log"
        self.run_dir.mkdir(mode=0o700)
        self.log_dir.mkdir()
        self.sock = self.run_dir / "supervisor.sock"
        self.conf = tmp / "supervisord.conf"
        self.write(box)
        self.out = open(tmp / "supervisord.stdout", "wb")
        argv = config.supervisord_command(os.fspath(self.conf), os.fspath(VENV_SUPERVISORD))
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=subprocess.STDOUT, cwd=tmp)
        self.client = Supervisor(os.fspath(self.sock))

    def write(self, box: Box) -> None:
        run_as = "root" if os.geteuid() == 0 else None
        (self.run_dir / config.LISTENER_SCRIPT).write_text(config.listener_source())
        self.conf.write_text(
            config.render(box, os.fspath(self.sock), os.fspath(self.log_dir), run_as=run_as, python=PY)
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


def load_box(tmp: Path, text: str) -> Box:
    f = tmp / "Devboxfile"
    f.write_text(text)
    return devboxfile.load(f).boxes["b"]


@pytest.fixture
def start(tmp_path: Path) -> Iterator:
    started: list[Running] = []

    def _start(text: str) -> Running:
        r = Running(tmp_path, load_box(tmp_path, text))
        started.append(r)
        return r

    yield _start
    for r in started:
        r.stop()


def deadline(s: float = 15.0) -> float:
    return time.monotonic() + s


def three_services(port: int) -> str:
    return f"""
boxes:
  b:
    base: debian:bookworm
    services:
      web:
        command: [{PY}, -m, http.server, "{port}", --bind, 127.0.0.1]
        startsecs: 0
        health: {{tcp: {port}}}
      sleeper:
        command: sleep 300
        startsecs: 0
      broken:
        command: sh -c 'echo boom-stdout; echo boom-stderr >&2; exit 3'
        startsecs: 1
        startretries: 1
"""


def test_running_fatal_restart_signal_shutdown(start) -> None:
    port = free_port()
    r = start(three_services(port))
    box = load_box(r.tmp, three_services(port))
    rep = health.wait_healthy(r.client, box, None, None, deadline(), services=["web", "sleeper"])
    assert rep.ok, rep
    assert rep.services["web"].state == "RUNNING" and rep.services["web"].pid > 0
    assert r.client.state() == "RUNNING"

    # FATAL is detected with the program's last lines
    rep = health.wait_healthy(r.client, box, None, None, deadline(), services=["broken"])
    assert not rep.ok
    b = rep.services["broken"]
    assert b.state == "FATAL" and b.message.startswith("FATAL")
    assert b.log and set(b.log) == {"boom-stderr"}  # one line per attempt
    with pytest.raises(ServiceError, match="service broken: FATAL") as ei:
        rep.raise_for_failure()
    assert "boom-stderr" in (ei.value.hint or "")
    assert "boom-stdout" in r.client.tail("broken", "stdout")

    # processes / info
    names = {p.name: p for p in r.client.processes()}
    assert set(names) == {"web", "sleeper", "broken"}
    assert names["sleeper"].state == "RUNNING" and names["sleeper"].uptime >= 0

    # restart changes the pid
    pid = r.client.info("sleeper").pid
    r.client.restart("sleeper")
    assert r.client.info("sleeper").pid not in (0, pid)

    # signal: TERM the sleeper; supervisor restarts it (autorestart unexpected; killed by a signal)
    pid = r.client.info("sleeper").pid
    # with startsecs 0 it counts as RUNNING at fork; a signal before its exec of `sleep` would hit
    # supervisord's forked child (which ignores TERM): wait until it really is `sleep`
    end = deadline(5)
    while Path(f"/proc/{pid}/comm").read_text().strip() != "sleep" and time.monotonic() < end:
        time.sleep(0.01)
    r.client.signal("sleeper", "SIGTERM")
    end = deadline(5)
    while r.client.info("sleeper").pid in (0, pid) and time.monotonic() < end:
        time.sleep(0.02)
    assert r.client.info("sleeper").pid not in (0, pid)

    # faults become ServiceError with the fault name
    with pytest.raises(Fault, match=r"^BAD_NAME: nope$"):
        r.client.info("nope")
    with pytest.raises(Fault, match=r"^ALREADY_STARTED: web$"):
        r.client.start("web")
    with pytest.raises(Fault, match="BAD_SIGNAL"):
        r.client.signal("sleeper", "NOPE")
    r.client.stop("web")
    assert r.client.info("web").state == "STOPPED"
    assert "GET" not in r.client.read_log("web", "stderr", 0, 0) or True

    r.client.shutdown()
    r.proc.wait(10)
    assert not r.sock.exists()
    with pytest.raises(Unreachable):
        r.client.state()


def test_update_adds_and_removes_programs(start) -> None:
    text = """
boxes:
  b:
    base: debian:bookworm
    services:
      one: {command: sleep 300, startsecs: 0}
"""
    r = start(text)
    box = load_box(r.tmp, text)
    assert health.wait_healthy(r.client, box, None, None, deadline()).ok
    text2 = text.replace("services:\n", "services:\n      two: {command: sleep 301, startsecs: 0}\n")
    box2 = load_box(r.tmp, text2)
    r.write(box2)
    res = r.client.update()
    assert res.added == ("two",) and not res.changed and not res.removed
    assert health.wait_healthy(r.client, box2, None, None, deadline()).ok
    r.write(box)
    res = r.client.update()
    assert res.removed == ("two",)
    assert [p.name for p in r.client.processes()] == ["one"]
    assert r.client.update().empty


def test_http_check_and_dependency_order(start) -> None:
    port = free_port()
    text = f"""
boxes:
  b:
    base: debian:bookworm
    services:
      api:
        command: [{PY}, -m, http.server, "{port}", --bind, 127.0.0.1]
        startsecs: 0
        health: {{http: "{port}/", interval: 20ms}}
      worker:
        command: sleep 300
        startsecs: 0
        depends_on: [api]
        health: {{command: "true"}}
"""
    r = start(text)
    box = load_box(r.tmp, text)
    calls: list[list[str]] = []

    def run_in_box(argv: list[str]) -> int:
        calls.append(argv)
        return subprocess.run(argv).returncode

    # worker is autostart=false in the conf: supervisord left it alone
    r.client.wait_ready(deadline())
    assert r.client.info("worker").state == "STOPPED"
    rep = health.start_in_order(r.client, box, None, run_in_box, deadline())
    assert rep.ok, rep
    assert list(rep.services) == ["api", "worker"]
    assert calls == [["timeout", "-s", "KILL", "1", "/bin/sh", "-c", "true"]]
    # again: nothing to start, still healthy
    assert health.start_in_order(r.client, box, None, run_in_box, deadline()).ok


def test_unhealthy_check_fails_with_deadline(start) -> None:
    port = free_port()
    text = f"""
boxes:
  b:
    base: debian:bookworm
    services:
      s:
        command: sleep 300
        startsecs: 0
        health: {{tcp: {port}, interval: 20ms, start_period: 0s, retries: 2}}
"""
    r = start(text)
    box = load_box(r.tmp, text)
    t = time.monotonic()
    rep = health.wait_healthy(r.client, box, None, None, deadline(10))
    assert not rep.ok and time.monotonic() - t < 5
    assert rep.services["s"].message.startswith("unhealthy after 2 failed checks: tcp 127.0.0.1:")
    # with a long grace period the deadline ends it
    box2 = load_box(r.tmp, text.replace("start_period: 0s", "start_period: 60s"))
    rep = health.wait_healthy(r.client, box2, None, None, deadline(0.3))
    assert not rep.ok and rep.services["s"].message.startswith("not healthy after")


def test_injection_never_adds_a_program(start, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f"""
boxes:
  b:
    base: debian:bookworm
    services:
      a:
        command: "sh -c 'echo a ;[program:evil] ; touch {marker}' #x"
        startsecs: 0
        autorestart: false
        directory: /tmp
        env: {{X: "1 %(ENV_HOME)s ,Y=2", Z: "a,b=c"}}
"""
    r = start(text)
    box = load_box(r.tmp, text)
    r.client.wait_ready(deadline())
    assert [p.name for p in r.client.processes()] == ["a"]
    end = deadline(5)
    while r.client.info("a").state != "EXITED" and time.monotonic() < end:
        time.sleep(0.02)
    out = r.client.tail("a", "stdout")
    assert "echo a ;[program:evil] ; touch" in box.services["a"].command[2]
    assert out == "a\n"  # sh ran `echo a`, then `[program:evil]` failed, then touch ran...
    assert marker.exists()  # ...because the user asked sh to run it: but no [program:evil] exists
    assert "[program:evil]" in r.client.tail("a", "stderr")


def test_socket_symlink_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    other = tmp_path / "other.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(os.fspath(other))
    srv.listen()
    try:
        (run / "supervisor.sock").symlink_to(other)
        with pytest.raises(Unreachable, match="is a symlink; refusing"):
            Supervisor(os.fspath(run / "supervisor.sock")).state()
        (run / "supervisor.sock").unlink()
        (run / "supervisor.sock").write_text("")
        with pytest.raises(Unreachable, match="not a socket"):
            Supervisor(os.fspath(run / "supervisor.sock")).state()
        link = tmp_path / "linkdir"
        link.symlink_to(run)
        with pytest.raises(Unreachable, match="run dir"):
            Supervisor(os.fspath(link / "supervisor.sock")).state()
    finally:
        srv.close()


def test_wait_ready_times_out_without_socket(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    c = Supervisor(os.fspath(tmp_path / "run" / "supervisor.sock"))
    t = time.monotonic()
    with pytest.raises(ServiceError, match="not ready"):
        c.wait_ready(time.monotonic() + 0.2)
    assert time.monotonic() - t < 1


def test_log_listener_writes_timestamped_cri_lines(start) -> None:
    """The `_devbox_logs` event listener (logstamp.py, run by this python) copies each line of
    stdout and stderr into NAME.ts.log with a UTC timestamp; it is hidden from processes()."""
    from devbox.services import logs

    t0 = time.time()
    r = start(f"""
boxes:
  b:
    base: debian:bookworm
    services:
      talker:
        command: [{PY}, -u, -c, "import sys, time; print('out one'); print('err one', file=sys.stderr); sys.stdout.write('part'); sys.stdout.flush(); time.sleep(0.2); print('ial'); time.sleep(300)"]
        startsecs: 0
""")
    r.client.wait_ready(deadline())
    ts = r.log_dir / "talker.ts.log"
    end = deadline()
    while time.monotonic() < end:
        recs = list(logs.parse_lines(ts.read_bytes())) if ts.exists() else []
        if [x.text for x in recs if x.stream == "stdout"] == [b"out one", b"partial"]:
            break
        time.sleep(0.05)
    assert [(x.stream, x.text) for x in recs if x.stream == "stderr"] == [("stderr", b"err one")]
    assert [x.text for x in recs if x.stream == "stdout"] == [b"out one", b"partial"], ts.read_bytes()
    assert all(t0 - 1 <= x.time <= time.time() + 1 for x in recs)
    assert [p.name for p in r.client.processes()] == ["talker"]
    assert [p.name for p in r.client.processes(internal=True)] == ["_devbox_logs", "talker"]
    # the plain logs are unchanged
    assert (r.log_dir / "talker.out.log").read_bytes() == b"out one\npartial\n"
    assert (r.log_dir / "_devbox_logs.err.log").read_bytes() == b""  # the listener had nothing to complain about
