"""`devbox logs --since` through the real `devbox` command: one Debian box whose service prints a line
at start and another each time the test asks; --since (ISO time, durations) keeps the new line and
drops the old one, with -n and -f; a box without the log listener and a plain container are refused
with a one-line error; a bad value names itself."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import DEVBOX, devbox, ok, wait_for

pytestmark = pytest.mark.root

DEVBOXFILE = """
name: e2elogs
boxes:
  app:
    base: debian:bookworm
    mounts: ["./t:/srv/t"]
    services:
      ticker:
        command: ["sh", "-c", "echo old-line; echo old-err >&2; while :; do for f in /srv/t/*.go; do [ -e \\"$f\\" ] || continue; echo \\"new-line $(basename $f .go)\\"; rm -f \\"$f\\"; done; sleep 0.05; done"]
        startsecs: 0
      quiet:
        command: sleep infinity
        startsecs: 0
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, debian_image: str) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("logsproj")
    (d / "t").mkdir()
    (d / "Devboxfile").write_text(DEVBOXFILE)
    try:
        r = devbox("up", cwd=d, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        yield d
    finally:
        devbox("destroy", "-f", cwd=d, timeout=300)


def trigger(d: Path, name: str) -> None:
    (d / "t" / f"{name}.go").write_text("")


def logs(d: Path, *args: str) -> str:
    return ok("logs", *args, cwd=d)


def test_since_keeps_new_lines_and_drops_old_ones(project: Path) -> None:
    d = project
    wait_for(
        lambda: "old-line" in logs(d, "app/ticker", "--since", "1h"), what="old-line in the stamped log"
    )
    time.sleep(0.2)  # the old line is now clearly before `mark`
    mark = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    trigger(d, "one")
    wait_for(lambda: "new-line one" in logs(d, "app/ticker"), what="new-line one")

    since_mark = logs(d, "app/ticker", "--since", mark)
    assert "new-line one" in since_mark
    assert "old-line" not in since_mark and "old-err" not in since_mark
    # durations: an hour back has everything, in order, stdout and stderr together; -t is --since
    hour = logs(d, "app/ticker", "-t", "1h").splitlines()
    assert hour.index("new-line one") > hour.index("old-line") and "old-err" in hour
    assert logs(d, "app/ticker", "--since", "1h", "-n", "1") == "new-line one\n"
    # the whole box: every service, prefixed; supervisord's own log is left out
    assert "app/ticker | new-line one" in logs(d, "app", "--since", mark).splitlines()
    assert logs(d, "--since", "1d", "-n", "0") == ""

    # -f: the lines since the mark, then new ones as they come
    p = subprocess.Popen([DEVBOX, "logs", "app/ticker", "-f", "--since", mark], cwd=d,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))  # fmt: skip
    watchdog = threading.Timer(30, p.kill)  # a readline that never returns fails the test instead
    watchdog.start()
    try:
        assert p.stdout is not None
        assert p.stdout.readline() == b"new-line one\n"
        trigger(d, "two")
        assert p.stdout.readline() == b"new-line two\n"
    finally:
        watchdog.cancel()
        p.kill()
        p.wait()
        for f in (p.stdout, p.stderr):
            if f:
                f.close()


def test_bad_since_names_the_value(project: Path) -> None:
    r = devbox("logs", "app/ticker", "--since", "10 minutes", cwd=project)
    assert r.returncode != 0 and r.stdout == ""
    assert (
        r.stderr.count("\n") == 1
        and "'10 minutes'" in r.stderr
        and "10m" in r.stderr
        and "ISO 8601" in r.stderr
    )


def test_box_without_the_listener_is_refused(project: Path) -> None:
    """A box set up before the listener existed: its supervisord.conf has no [eventlistener:_devbox_logs]."""
    from devbox import orchestrator

    proj = orchestrator.load(project / "Devboxfile")
    c = orchestrator.box_container(proj, "app")
    assert c is not None
    conf = orchestrator.run_dir(c) / "supervisord.conf"
    saved = conf.read_bytes()
    try:
        conf.write_bytes(saved.replace(b"[eventlistener:_devbox_logs]", b"[eventlistener:renamed]"))
        r = devbox("logs", "app", "--since", "10m", cwd=project)
        assert r.returncode != 0 and r.stdout == ""
        assert r.stderr.count("\n") == 1 and "box app" in r.stderr and "devbox provision app" in r.stderr
    finally:
        conf.write_bytes(saved)
    assert "old-line" in logs(project, "app/ticker", "--since", "1h")


def test_plain_container_is_refused(busybox_image: str) -> None:
    name = f"logs-since-{os.getpid()}"
    try:
        ok("run", "-d", "--name", name, busybox_image, "sh", "-c", "echo hi; sleep 60")
        r = devbox("logs", "--since", "10m", name)
        assert r.returncode != 0 and r.stdout == ""
        assert r.stderr.count("\n") == 1 and name in r.stderr and "--since" in r.stderr and "-n" in r.stderr
    finally:
        devbox("rm", "-f", name)
