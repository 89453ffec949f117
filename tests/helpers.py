"""Helpers for tests that drive the real `devbox` command."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEVBOX = str(REPO / ".venv" / "bin" / "devbox")


def devbox(*args: str, input: str | None = None, timeout: float = 120, cwd: str | os.PathLike[str] | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run `devbox ARGS` with the test's DEVBOX_ROOT; never raises on a non-zero exit."""
    return subprocess.run(
        [DEVBOX, *args], input=input, capture_output=True, text=True, timeout=timeout, cwd=cwd,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def ok(*args: str, **kw: object) -> str:
    """Run devbox and assert success; return stdout."""
    r = devbox(*args, **kw)  # type: ignore[arg-type]
    assert r.returncode == 0, f"devbox {' '.join(args)} -> {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r.stdout


def wait_for(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    """Poll `cond` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def cgroup_dirs_for(cid: str) -> list[Path]:
    out = []
    for base in Path("/sys/fs/cgroup").iterdir():
        d = base / "devbox" / cid
        if d.exists():
            out.append(d)
    d = Path("/sys/fs/cgroup/devbox") / cid
    if d.exists():
        out.append(d)
    return out


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
