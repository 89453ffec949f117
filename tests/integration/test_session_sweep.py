"""The test suite's own hygiene: a run that was killed (SIGKILL, a CI timeout) never runs its session
finalizers and leaves its tmpfs state root mounted under /tmp; the next run removes it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import session_dir_prefix, sweep_stale_session_roots

pytestmark = [pytest.mark.root]


def _tmpfs(d: Path) -> Path:
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "dbxtest", str(d)], check=True)
    (d / "state").mkdir()
    (d / "state" / "marker").write_text("x")
    return d


def test_roots_of_dead_runs_go_live_and_unknown_ones_stay(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = _tmpfs(tmp_path / f"dbxtest-{dead.pid}-12345-abcdefgh")
    live = _tmpfs(tmp_path / f"{session_dir_prefix()}ijklmnop")
    reused = _tmpfs(tmp_path / f"dbxtest-{os.getpid()}-1-qrstuvwx")  # our pid, another start time: a dead run's
    unknown = tmp_path / "dbxtest-oldformat"
    unknown.mkdir()
    try:
        removed = sweep_stale_session_roots(tmp_path)
        assert sorted(removed) == sorted([stale, reused])
        assert not stale.exists() and not reused.exists()
        assert os.path.ismount(live) and (live / "state" / "marker").exists()
        assert unknown.is_dir()
    finally:
        for d in (stale, live, reused):
            if os.path.ismount(d):
                subprocess.run(["umount", "-l", str(d)], check=False)
