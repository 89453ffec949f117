# ruff: noqa: E501  (tables of exact error messages read best one per line)
"""services.client and services.health against recording fakes (no supervisord)."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from devbox import devboxfile
from devbox.errors import ServiceError
from devbox.model import Box
from devbox.services import health
from devbox.services.client import Fault, ProcessInfo, Supervisor, Unreachable


def test_fault_names() -> None:
    f = Fault(10, "BAD_NAME: web")
    assert str(f) == "BAD_NAME: web" and f.name == "BAD_NAME" and f.detail == "web"
    assert isinstance(f, ServiceError)
    assert str(Fault(60, "ALREADY_STARTED: x")) == "ALREADY_STARTED: x"


def test_process_info_from_rpc() -> None:
    d = {"name": "web", "group": "web", "pid": 42, "state": 20, "statename": "RUNNING", "start": 100,
         "stop": 0, "now": 130, "exitstatus": 0, "spawnerr": "", "description": "pid 42, uptime 0:00:30",
         "logfile": "/x", "stdout_logfile": "/x", "stderr_logfile": "/y"}  # fmt: skip
    p = ProcessInfo.from_rpc(d)
    assert (p.name, p.state, p.pid, p.uptime, p.fullname) == ("web", "RUNNING", 42, 30, "web")
    assert ProcessInfo.from_rpc({**d, "statename": "STOPPED"}).uptime == 0


def test_update_follows_supervisorctl_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    def fake_call(self: Supervisor, method: str, *args: Any, timeout: float | None = None) -> Any:
        calls.append((method.removeprefix("supervisor."), *args))
        if method == "supervisor.reloadConfig":
            return [[["new"], ["chg"], ["old"]]]
        if method == "supervisor.stopProcessGroup" and args[0] == "old":
            raise Fault(70, "NOT_RUNNING: old")
        return True

    monkeypatch.setattr(Supervisor, "_call", fake_call)
    res = Supervisor("/nonexistent/supervisor.sock").update()
    assert (res.added, res.changed, res.removed) == (("new",), ("chg",), ("old",))
    assert calls == [
        ("reloadConfig",),
        ("stopProcessGroup", "old", True), ("removeProcessGroup", "old"),
        ("stopProcessGroup", "chg", True), ("removeProcessGroup", "chg"), ("addProcessGroup", "chg"),
        ("addProcessGroup", "new"),
    ]  # fmt: skip


def test_unreachable_when_missing(tmp_path: Path) -> None:
    with pytest.raises(Unreachable, match="No such file or directory"):
        Supervisor(str(tmp_path / "supervisor.sock")).state()
    assert Supervisor(str(tmp_path / "nope" / "supervisor.sock")).ping() is False


# ---- health with a fake supervisor ---------------------------------------------------------------


class FakeSupervisor:
    """Scripted states: each processes() call advances every program one step in its script."""

    def __init__(self, scripts: dict[str, list[str]], logs: dict[str, str] | None = None) -> None:
        self.scripts = scripts
        self.step: dict[str, int] = {n: 0 for n in scripts}
        self.logs = logs or {}
        self.started: list[str] = []
        self.polls = 0

    def wait_ready(self, deadline: float) -> None:
        pass

    def _info(self, name: str) -> ProcessInfo:
        script = self.scripts[name]
        state = script[min(self.step[name], len(script) - 1)]
        return ProcessInfo(name, name, state, 100 if state == "RUNNING" else 0, 1, 0, 2,
                           3 if state == "EXITED" else 0, "", "")  # fmt: skip

    def processes(self) -> list[ProcessInfo]:
        self.polls += 1
        out = [self._info(n) for n in self.scripts]
        for n in self.scripts:
            if n in self.started or self.scripts[n][0] != "STOPPED":
                self.step[n] += 1
        return out

    def info(self, name: str) -> ProcessInfo:
        return self._info(name)

    def start(self, name: str, wait: bool = True) -> None:
        self.started.append(name)
        self.step[name] = 1

    def tail(self, name: str, stream: str = "stderr", length: int = 4096) -> str:
        return self.logs.get(f"{name}.{stream}", "")


def make_box(services: str) -> Box:
    return devboxfile.loads(
        f"boxes:\n  b:\n    base: x\n    services:\n{services}", Path("/p/Devboxfile")
    ).boxes["b"]


def test_fatal_fails_fast_with_log_lines() -> None:
    box = make_box("      a: {command: x}\n      bad: {command: y}\n")
    fake = FakeSupervisor(
        {"a": ["STARTING"] * 1000, "bad": ["STARTING", "BACKOFF", "FATAL"]},
        {"bad.stderr": "\n".join(f"line {i}" for i in range(30)) + "\n"},
    )
    t = time.monotonic()
    rep = health.wait_healthy(fake, box, None, None, time.monotonic() + 30)  # type: ignore[arg-type]
    assert time.monotonic() - t < 1
    assert not rep.ok
    assert rep.services["bad"].message == "FATAL: exited too quickly"
    assert rep.services["bad"].log == tuple(f"line {i}" for i in range(20, 30))
    assert rep.services["a"].message == "not checked: another service failed"
    with pytest.raises(ServiceError, match="^box b: service bad: FATAL: exited too quickly$") as ei:
        rep.raise_for_failure()
    assert (ei.value.hint or "").startswith("last log lines:\n  line 20\n")


def test_exited_without_restart_fails_and_stdout_is_fallback() -> None:
    box = make_box("      once: {command: x, autorestart: false}\n")
    fake = FakeSupervisor({"once": ["STARTING", "EXITED"]}, {"once.stdout": "bye\n"})
    rep = health.wait_healthy(fake, box, None, None, time.monotonic() + 5)  # type: ignore[arg-type]
    assert rep.services["once"].message == "exited with status 3 and will not be restarted"
    assert rep.services["once"].log == ("bye",)


def test_deadline_reports_last_state() -> None:
    box = make_box("      slow: {command: x}\n")
    fake = FakeSupervisor({"slow": ["STARTING"]})
    t = time.monotonic()
    rep = health.wait_healthy(fake, box, None, None, time.monotonic() + 0.2)  # type: ignore[arg-type]
    assert 0.2 <= time.monotonic() - t < 0.5
    assert rep.services["slow"].message.startswith("not healthy after 0.2s: STARTING")
    assert fake.polls < 20  # polls are ~20 ms apart


def test_start_in_order_waits_for_dependencies() -> None:
    box = make_box(
        "      db: {command: x}\n"
        "      app: {command: y, depends_on: [db]}\n"
        "      worker: {command: z, depends_on: [app, db]}\n"
        "      manual: {command: m, autostart: false}\n"
    )
    fake = FakeSupervisor({"db": ["STARTING", "RUNNING"], "app": ["STOPPED", "STARTING", "RUNNING"],
                           "worker": ["STOPPED", "RUNNING"], "manual": ["STOPPED"]})  # fmt: skip
    rep = health.start_in_order(fake, box, None, None, time.monotonic() + 5)  # type: ignore[arg-type]
    assert rep.ok, rep
    assert fake.started == ["app", "worker"]
    assert list(rep.services) == ["db", "app", "worker"]


def test_command_check_uses_run_in_box() -> None:
    box = make_box(
        "      s: {command: x, health: {command: 'test -e /ready', start_period: 0s, retries: 2, interval: 1ms}}\n"
    )
    codes = iter([1, 1])
    seen: list[list[str]] = []

    def run(argv: list[str]) -> int:
        seen.append(argv)
        return next(codes)

    rep = health.wait_healthy(FakeSupervisor({"s": ["RUNNING"]}), box, None, run, time.monotonic() + 5)  # type: ignore[arg-type]
    assert rep.services["s"].message == (
        "unhealthy after 2 failed checks: command ['/bin/sh', '-c', 'test -e /ready'] exited with status 1"
    )
    assert seen[0] == ["timeout", "-s", "KILL", "1", "/bin/sh", "-c", "test -e /ready"]
    rep = health.wait_healthy(
        FakeSupervisor({"s": ["RUNNING"]}), box, None, lambda a: 0, time.monotonic() + 5
    )  # type: ignore[arg-type]
    assert rep.ok and rep.services["s"].message == "RUNNING, check passed"


def test_http_and_tcp_checks() -> None:
    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = {"/ok": 200, "/missing": 404, "/moved": 302, "/broken": 503}[self.path]
            self.send_response(code)
            self.send_header("Location", "http://example.invalid/")
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    port = srv.server_address[1]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://localhost:{port}"
        assert health.check_http(url + "/ok", "127.0.0.1", 1) is None
        assert health.check_http(url + "/missing", "127.0.0.1", 1) is None
        assert health.check_http(url + "/moved", "127.0.0.1", 1) is None
        assert (
            health.check_http(url + "/broken", "127.0.0.1", 1)
            == f"http http://127.0.0.1:{port}/broken: status 503"
        )
        assert health.check_tcp("127.0.0.1", port, 1) is None
    finally:
        srv.shutdown()
        srv.server_close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert health.check_tcp("127.0.0.1", closed, 1) == f"tcp 127.0.0.1:{closed}: Connection refused"


def test_open_box_file_refuses_symlinks_and_specials(tmp_path: Path) -> None:
    import os

    from devbox.services.client import open_box_file

    (tmp_path / "web.out.log").write_text("hello\n")
    with os.fdopen(open_box_file(tmp_path, "web.out.log"), "rb") as f:
        assert f.read() == b"hello\n"
    (tmp_path / "evil.out.log").symlink_to("/etc/passwd")
    with pytest.raises(ServiceError, match="evil.out.log: Too many levels of symbolic links"):
        open_box_file(tmp_path, "evil.out.log")
    os.mkfifo(tmp_path / "fifo.log")
    with pytest.raises(ServiceError, match="is not a regular file"):
        open_box_file(tmp_path, "fifo.log")
    (tmp_path.parent / f"{tmp_path.name}-link").symlink_to(tmp_path)
    with pytest.raises(ServiceError, match="Not a directory|Too many levels"):
        open_box_file(tmp_path.parent / f"{tmp_path.name}-link", "web.out.log")
    with pytest.raises(ServiceError, match="invalid file name"):
        open_box_file(tmp_path, "../x")
