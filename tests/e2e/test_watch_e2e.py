"""`devbox watch` end to end: a real project with one box on the session's Debian image, the watcher
running as its own process, real edits in the mounted project folder.

Proves: an edit restarts exactly the service its rule names (its pid changes, the other's does not);
edits under ignored paths (defaults, .gitignore, rule globs) do nothing; `exec` and `sync` actions
reach the box; `signal` reaches its service; a Devboxfile edit that adds a service starts it without
restarting the watcher; a `rebuild` rule recreates the box from the changed copied file and the
synced tree is copied again; Ctrl-C (SIGINT) ends the watcher with a clean message and leaves the box
running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import DEVBOX, devbox, ok, wait_for

pytestmark = [pytest.mark.root, pytest.mark.debian]

DEVBOXFILE = """\
name: {name}
boxes:
  web:
    base: {image}
    build:
      - copy: files/motd
        to: /etc/motd
    mounts: ["./app:/srv/app"]
    services:
      app: {{command: python3 /srv/app/main.py}}
      other: {{command: sleep infinity}}
    watch:
      - {{path: ./app, include: ["*.py"], ignore: ["scratch/"], action: restart app}}
      - {{path: ./app, include: ["*.txt"], action: "exec echo ran >> /srv/app/exec.marker"}}
      - {{path: ./conf, action: sync /etc/myconf}}
      - {{path: ./files, action: rebuild}}
      - {{path: ./app/other.cfg, action: signal other HUP}}
"""
EXTRA = """      extra: {command: sleep infinity}
    watch:"""


@dataclass
class Watched:
    root: Path
    file: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def services(self) -> dict[str, dict[str, object]]:
        st = json.loads(ok("status", "--json", "--file", os.fspath(self.file)))
        return {s["name"]: s for b in st["boxes"] for s in b["services"]}

    def pid(self, svc: str) -> int:
        return int(self.services()[svc]["pid"])  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def watched(debian_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    root = tmp_path_factory.mktemp("watchproj")
    name = "wt" + uuid.uuid4().hex[:6]
    f = root / "Devboxfile"
    f.write_text(DEVBOXFILE.format(name=name, image=debian_image))
    (root / "app").mkdir()
    (root / "app/main.py").write_text("import time\nwhile True:\n    time.sleep(60)\n")
    (root / "conf").mkdir()
    (root / "conf/a.conf").write_text("a=1\n")
    (root / ".gitignore").write_text("generated/\n")
    (root / "files").mkdir()
    (root / "files/motd").write_text("v1\n")
    log = root.parent / f"{name}-watch.log"
    proc = None
    try:
        ok("up", "--file", os.fspath(f), timeout=300)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [DEVBOX, "watch", "--file", os.fspath(f)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=root,
                env=dict(os.environ),
            )
        w = Watched(root, f, log, proc)
        wait_for(
            lambda: "Ctrl-C to stop" in w.output() or proc.poll() is not None, 30, "the watcher to start"
        )
        assert proc.poll() is None, w.output()
        # the start-up sync has copied conf/ into the box
        wait_for(lambda: "sync /etc/myconf: ok" in w.output(), 30, "the first sync")
        yield w
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        devbox("destroy", "-f", "--file", os.fspath(f), timeout=120)


def test_edit_restarts_the_right_service_only(watched: Watched) -> None:
    app, other = watched.pid("app"), watched.pid("other")
    (watched.root / "app/main.py").write_text("import time\n# v2\nwhile True:\n    time.sleep(60)\n")
    wait_for(
        lambda: watched.services()["app"]["state"] == "RUNNING" and watched.pid("app") != app,
        30,
        "app to run with a new pid",
    )
    assert watched.pid("other") == other
    assert "web: restart app (main.py changed)" in watched.output()
    # supervisor reports the new pid RUNNING a moment before the watcher's restart call returns
    wait_for(lambda: "web: restart app: ok" in watched.output(), 10, "the watcher to report the restart")


def test_a_failed_action_is_shown_and_watching_goes_on(watched: Watched) -> None:
    main = watched.root / "app/main.py"
    good = main.read_text()
    main.write_text("def broken(:\n")
    wait_for(lambda: "web: restart app: FAILED" in watched.output(), 30, "the failed restart")
    assert "SyntaxError" in watched.output()  # the service's own last words
    app = watched.pid("app")
    main.write_text(good + "# fixed\n")
    wait_for(
        lambda: watched.services()["app"]["state"] == "RUNNING" and watched.pid("app") not in (0, app),
        60,
        "app to run again",
    )
    assert watched.proc.poll() is None


def test_ignored_paths_do_nothing(watched: Watched) -> None:
    app = watched.pid("app")
    before = watched.output().count("restart app (")
    for rel in (
        "node_modules/lib/x.py",
        "generated/gen.py",
        "scratch/s.py",
        "__pycache__/m.py",
        ".main.py.swp",
        "notes.md",
    ):
        p = watched.root / "app" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x = 1\n")
    # a change the exec rule takes, made after the ignored ones: once it has run, the watcher has seen
    # (and dropped) every earlier event
    (watched.root / "app/sentinel.txt").write_text("go\n")
    marker = watched.root / "app/exec.marker"
    wait_for(lambda: marker.exists() and "ran" in marker.read_text(), 30, "the exec action")
    wait_for(lambda: "exec echo ran >> /srv/app/exec.marker: ok" in watched.output(), 10, "the exec outcome")
    assert watched.output().count("restart app (") == before, watched.output()
    assert watched.pid("app") == app


def test_signal_reaches_the_service(watched: Watched) -> None:
    # `sleep` dies of SIGHUP; supervisord (autorestart=unexpected) starts it again with a new pid
    app, other = watched.pid("app"), watched.pid("other")
    (watched.root / "app/other.cfg").write_text("reload=1\n")
    wait_for(lambda: watched.services()["other"]["state"] == "RUNNING" and watched.pid("other") != other, 30,
             "other to be signalled and restarted")  # fmt: skip
    assert "web: signal other HUP: ok" in watched.output()
    assert watched.pid("app") == app


def test_sync_copies_into_the_box(watched: Watched) -> None:
    (watched.root / "conf/b.conf").write_text("b=2\n")
    (watched.root / "conf/a.conf").unlink()

    def in_box() -> str:
        r = devbox("exec", "web", "--", "/bin/sh", "-c", "cat /etc/myconf/*", cwd=watched.root)
        return r.stdout

    wait_for(lambda: in_box() == "b=2\n", 30, "conf/ to reach the box")


def test_devboxfile_edit_adds_a_service(watched: Watched) -> None:
    text = watched.file.read_text()
    watched.file.write_text(text.replace("    watch:", EXTRA, 1))
    wait_for(lambda: watched.services().get("extra", {}).get("state") == "RUNNING", 120, "the new service")
    wait_for(lambda: "project: up: ok" in watched.output(), 60, "the reload's outcome")
    assert watched.proc.poll() is None  # the same watcher goes on
    # ... with the rules re-read: still restarts app
    app = watched.pid("app")
    (watched.root / "app/main.py").write_text("import time\n# v3\nwhile True:\n    time.sleep(60)\n")
    wait_for(
        lambda: watched.services()["app"]["state"] == "RUNNING" and watched.pid("app") != app,
        30,
        "app to restart after the reload",
    )


def test_rebuild_recreates_the_box_and_syncs_again(watched: Watched) -> None:
    def box() -> tuple[str, str]:
        st = json.loads(ok("status", "--json", "--file", os.fspath(watched.file)))
        r = devbox("exec", "web", "--", "/bin/sh", "-c", "cat /etc/motd /etc/myconf/*", cwd=watched.root)
        return st["boxes"][0]["container"], r.stdout

    before, _ = box()
    (watched.root / "files/motd").write_text("v2\n")
    wait_for(lambda: "web: rebuild: ok" in watched.output(), 180, "the rebuild")
    after, text = wait_for(lambda: (lambda b: b if b[1] == "v2\nb=2\n" else None)(box()), 60,
                           "the new box with the new file and the synced conf")  # fmt: skip
    assert after != before


def test_ctrl_c_stops_watching_and_leaves_the_box_running(watched: Watched) -> None:
    watched.proc.send_signal(signal.SIGINT)
    assert watched.proc.wait(timeout=30) == 0
    assert "stopped watching; the boxes keep running" in watched.output()
    st = json.loads(ok("status", "--json", "--file", os.fspath(watched.file)))
    assert [b["state"] for b in st["boxes"]] == ["running"]
