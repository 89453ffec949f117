"""Shared fixtures.

Every test that touches the kernel runs against a private state root (DEVBOX_ROOT) on a tmpfs made for
the session, so the host's /var/lib/devbox is never touched and the disk's slow-after-delete trap does
not slow the suite. Fixtures clean up even when a test fails.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason="needs root")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


SESSION_PREFIX = "dbxtest-"


def session_dir_prefix(pid: int | None = None) -> str:
    """`dbxtest-PID-START-`: the session roots of a test run carry its pytest's pid and start time, so
    that a later run can tell the root of a run that was killed (and never ran its finalizers)."""
    from devbox.runtime.linux import proc_start_time

    pid = os.getpid() if pid is None else pid
    return f"{SESSION_PREFIX}{pid}-{proc_start_time(pid) or 0}-"


def sweep_stale_session_roots(base: Path = Path("/tmp")) -> list[Path]:
    """Remove the session roots of earlier test runs whose pytest is gone: their containers (through
    devbox, with that root), their tmpfs and the directory. A root whose process still runs, or whose
    name does not carry a pid and start time, is left alone. Returns what was removed."""
    from devbox.runtime.linux import proc_start_time

    removed = []
    for d in sorted(base.glob(SESSION_PREFIX + "*")):
        parts = d.name[len(SESSION_PREFIX) :].split("-")
        if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()) or not d.is_dir():
            continue
        pid, start = int(parts[0]), int(parts[1])
        if proc_start_time(pid) == start:
            continue  # that run is still going
        if os.path.ismount(d):
            _cleanup_root(d / "state")
            subprocess.run(["umount", "-R", "-l", str(d)], check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", str(d)], check=False)
        removed.append(d)
    return removed


@pytest.fixture(scope="session")
def session_root() -> Iterator[Path]:
    """A tmpfs-backed devbox state root shared by the whole session (images are imported once)."""
    if IS_ROOT:
        sweep_stale_session_roots()
    d = Path(tempfile.mkdtemp(prefix=session_dir_prefix(), dir="/tmp"))
    mounted = False
    if IS_ROOT:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12g,mode=0755", "dbxtest", str(d)], check=True)
        mounted = True
    old = os.environ.get("DEVBOX_ROOT")
    os.environ["DEVBOX_ROOT"] = str(d / "state")
    try:
        yield d / "state"
    finally:
        if old is None:
            os.environ.pop("DEVBOX_ROOT", None)
        else:
            os.environ["DEVBOX_ROOT"] = old
        if mounted:
            _cleanup_root(d / "state")
            subprocess.run(["umount", "-R", "-l", str(d)], check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", str(d)], check=False)


def _cleanup_root(root: Path) -> None:
    """Remove every container (processes, mounts, cgroups, links) left under `root`."""
    env = dict(os.environ, DEVBOX_ROOT=str(root))
    devbox = str(Path(__file__).resolve().parent.parent / ".venv/bin/devbox")
    subprocess.run([devbox, "rm", "-f", "--all"], env=env, check=False, capture_output=True)
    nets = root / "networks"
    if nets.is_dir():
        names = [p.stem for p in nets.glob("*.json")]
        if names:
            subprocess.run([devbox, "network", "rm", "-f", *names], env=env, check=False, capture_output=True)


@pytest.fixture
def devbox_root(session_root: Path) -> Path:
    return session_root


# --- images (owned by the image store; session-scoped so each image is imported once) -------------------


@pytest.fixture(scope="session")
def busybox_image(session_root: Path) -> str:
    """`busybox:test`: a tiny rootfs around Debian's static busybox, imported into the session store."""
    if not IS_ROOT:
        pytest.skip("needs root")
    from images import make_busybox_rootfs_tar

    from devbox.runtime.image import importer
    from devbox.runtime.image.store import ImageStore

    tar = make_busybox_rootfs_tar(session_root.parent / "busybox-rootfs.tar.gz")
    importer.import_archive(ImageStore(session_root), tar, "busybox:test")
    return "busybox:test"


@pytest.fixture(scope="session")
def debian_image(session_root: Path) -> str:
    """`debian:bookworm` from the cached mmdebstrap tarball (built once per machine, ~40 s)."""
    if not IS_ROOT:
        pytest.skip("needs root")
    from images import debian_rootfs_tar

    from devbox.runtime.image import bootstrap
    from devbox.runtime.image.store import ImageStore

    store = ImageStore(session_root)
    bootstrap.import_bootstrap_tar(store, debian_rootfs_tar("bookworm"), "bookworm", "debian:bookworm")
    return "debian:bookworm"


@pytest.fixture(scope="session", autouse=True)
def _bootstrap_cache() -> Iterator[None]:
    """Let `debian:SUITE` bootstraps in tests (ensure_image, the CLI) reuse the per-machine cache."""
    from images import CACHE_DIR

    old = os.environ.get("DEVBOX_BOOTSTRAP_CACHE")
    os.environ.setdefault("DEVBOX_BOOTSTRAP_CACHE", str(CACHE_DIR))
    yield
    if old is None:
        os.environ.pop("DEVBOX_BOOTSTRAP_CACHE", None)
