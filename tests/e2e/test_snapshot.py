"""`devbox snapshot save|restore|list|delete` on a real project box running a python3 http.server."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import devbox, ok

pytestmark = pytest.mark.root

PORT = 18731


@pytest.fixture
def project(debian_image: str, tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("from the host\n")
    f = tmp_path / "Devboxfile"
    f.write_text(f"""name: snaptest
boxes:
  web:
    base: {debian_image}
    ports: ["{PORT}:8000"]
    mounts: ["./www:/srv/www"]
    services:
      http:
        command: python3 -m http.server 8000 --directory /srv
        health: {{tcp: 8000}}
""")
    try:
        ok("up", "--file", str(f), timeout=300)
        yield f
    finally:
        devbox("destroy", "-f", "--file", str(f))
        for line in ok("image", "ls").splitlines():
            parts = line.split()
            if parts and parts[0] in ("snapshot/snaptest-web", "snaptest-web"):
                devbox("image", "rm", f"{parts[0]}:{parts[1]}")


def _get(path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=5) as r:
        return r.read().decode()


def _sh(cmd: str) -> str:
    return ok("exec", "snaptest-web", "sh", "-c", cmd)


def test_save_restore_list_delete(project: Path) -> None:
    f = ["--file", str(project)]
    _sh("echo v1 > /srv/state.txt && rm /etc/issue && mkdir -p /opt/cache && echo c > /opt/cache/c")
    assert _get("/state.txt") == "v1\n"
    out = ok("snapshot", "save", "web", "first", "-m", "known good", *f)
    assert out.startswith("saved snapshot first of box web")
    # the box kept running through the save (frozen only while its upper dir was read)
    assert _get("/state.txt") == "v1\n"
    r = devbox("snapshot", "save", "web", "first", *f)
    assert r.returncode == 125 and "already has a snapshot named 'first'" in r.stderr

    _sh("echo v2 > /srv/state.txt && echo new > /srv/extra.txt && touch /etc/issue && rm -rf /opt/cache")
    ok("snapshot", "save", "web", "second", *f)
    _sh("echo v3 > /srv/state.txt && rm /srv/extra.txt")

    lst = json.loads(ok("snapshot", "list", "web", "--json", *f))
    assert [s["name"] for s in lst] == ["first", "second"]
    assert lst[0]["comment"] == "known good"
    table = ok("snapshot", "list", *f)
    assert "first" in table and "second" in table and table.startswith("BOX")

    out = ok("snapshot", "restore", "web", "first", *f)
    assert out.startswith("restored box web to snapshot first")
    # exactly the state of `first`: files back, later files gone, a deletion still deleted
    assert _sh("cat /srv/state.txt; ls /srv; test -e /etc/issue || echo no-issue; cat /opt/cache/c") == \
        "v1\nstate.txt\nwww\nno-issue\nc\n"  # fmt: skip
    assert _get("/state.txt") == "v1\n"  # the service is up again (restore waits until healthy)
    assert _get("/www/index.html") == "from the host\n"  # mounts are not part of a snapshot

    # restore again to another snapshot, then back: snapshots are unchanged by a restore
    ok("snapshot", "restore", "web", "second", *f)
    assert _sh("cat /srv/state.txt /srv/extra.txt; test -e /etc/issue && echo issue; ls /opt/cache 2>&1 || true") \
        .startswith("v2\nnew\nissue\n")  # fmt: skip
    _sh("echo v4 > /srv/state.txt")
    ok("snapshot", "save", "web", "third", *f)  # a snapshot of a restored box
    ok("snapshot", "restore", "web", "first", *f)
    assert _sh("cat /srv/state.txt") == "v1\n"
    ok("snapshot", "restore", "web", "third", *f)
    assert _sh("cat /srv/state.txt /srv/extra.txt") == "v4\nnew\n"

    # `up` leaves a restored box alone (its image did not change)
    ok("up", *f)
    assert _sh("cat /srv/state.txt") == "v4\n"
    st = json.loads(ok("status", "--json", *f))
    assert st["boxes"][0]["state"] == "running"

    # halt + up keeps the restored state (the container's lower layers are the snapshot's)
    ok("halt", *f)
    ok("up", *f)
    assert _sh("cat /srv/state.txt") == "v4\n"

    # delete: the snapshot goes; a box running on it keeps working
    assert ok("snapshot", "delete", "web", "third", *f).startswith("deleted snapshot third")
    assert [s["name"] for s in json.loads(ok("snapshot", "list", "--json", *f))] == ["first", "second"]
    ok("halt", *f)
    ok("up", *f)
    assert _sh("cat /srv/state.txt") == "v4\n"


def test_errors_are_one_clear_line(project: Path) -> None:
    f = ["--file", str(project)]
    for args, words in [
        (["snapshot", "restore", "web", "nope"], "no snapshot named 'nope'"),
        (["snapshot", "delete", "web", "nope"], "no snapshot named 'nope'"),
        (["snapshot", "save", "nobox", "x"], "no box named 'nobox'"),
        (["snapshot", "restore", "nobox", "x"], "no box named 'nobox'"),
        (["snapshot", "list", "nobox"], "no box named 'nobox'"),
        (["snapshot", "save", "web", "bad name!"], "invalid snapshot name"),
    ]:
        r = devbox(*args, *f)
        assert r.returncode == 125, (args, r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and words in r.stderr, (args, r.stderr)


def test_restore_recreates_a_destroyed_box(project: Path) -> None:
    f = ["--file", str(project)]
    _sh("echo kept > /srv/state.txt")
    ok("snapshot", "save", "web", "keep", *f)
    ok("destroy", "-f", *f)
    ok("snapshot", "restore", "web", "keep", *f, timeout=300)
    assert _sh("cat /srv/state.txt") == "kept\n"
    assert _get("/state.txt") == "kept\n"
