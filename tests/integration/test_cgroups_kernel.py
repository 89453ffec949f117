"""cgroups on this machine's real hierarchies (root). Every cgroup is made by the `cg` fixture, whose
finalizer kills what is left in it and removes it from every hierarchy, even when the test fails."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devbox.runtime import cgroups
from devbox.runtime.resources import Resources

pytestmark = pytest.mark.root

ROOT = Path(cgroups.ROOT)
M = 1024 * 1024


@pytest.fixture(scope="module", autouse=True)
def _no_parents_left() -> Iterator[None]:
    """The managers under test make the shared `devbox/` parents; remove them again when empty."""
    yield
    for d in [*cgroups.group_dirs(), ROOT / "unified" / cgroups.GROUP]:
        try:
            os.rmdir(d)
        except OSError:  # absent, or another devbox container lives there
            pass


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


@pytest.fixture
def cg(procs: list[subprocess.Popen[bytes]]) -> Iterator[cgroups.Manager]:
    m = cgroups.manager_for(f"dbxtest-{uuid.uuid4().hex[:12]}")
    try:
        yield m
    finally:
        try:
            m.kill_all(timeout=10)
        finally:
            for p in procs:  # reap our own children so nothing lingers as a zombie
                if p.poll() is None:
                    p.kill()
                p.wait(timeout=10)
            m.remove(timeout=10)
    assert not m.exists()


def spawn(procs: list[subprocess.Popen[bytes]], m: cgroups.Manager, *argv: str) -> subprocess.Popen[bytes]:
    """Start argv already inside the cgroup: the child joins before exec, so nothing it forks escapes."""
    p = subprocess.Popen(argv, preexec_fn=lambda: m.add_pid(0), stdin=subprocess.DEVNULL)
    procs.append(p)
    return p


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def proc_cgroups(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrl, path = line.split(":", 2)
        out[ctrl] = path
    return out


def leftover_dirs(container_id: str) -> list[Path]:
    return [d for d in ROOT.glob(f"*/devbox/{container_id}")] + (
        [ROOT / "devbox" / container_id] if (ROOT / "devbox" / container_id).exists() else []
    )


def fstype_at(mountpoint: str) -> str | None:
    """Filesystem type of the last mount at `mountpoint` in /proc/self/mountinfo."""
    found = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == mountpoint:
            found = fields[fields.index("-") + 1]
    return found


def test_detect_matches_mounts() -> None:
    top = fstype_at("/sys/fs/cgroup")
    if top == "cgroup2":
        expected = "unified"
    elif fstype_at("/sys/fs/cgroup/unified") == "cgroup2":
        expected = "hybrid"
    else:
        expected = "legacy"
    assert cgroups.detect() == expected


@pytest.fixture
def v2cg(procs: list[subprocess.Popen[bytes]]) -> Iterator[cgroups.Manager]:
    """A V2Manager on a real cgroup2 tree: the machine's own if unified, else hybrid's unified/ mount
    (no controllers there, but cgroup.kill, cgroup.freeze, procs and rmdir are the real thing)."""
    mode = cgroups.detect()
    if mode == "unified":
        root = ROOT
    elif mode == "hybrid":
        root = ROOT / "unified"
    else:
        pytest.skip("no cgroup2 mounted")
    m = cgroups.manager_for(f"dbxtest-{uuid.uuid4().hex[:12]}", root=root, mode="unified")
    try:
        yield m
    finally:
        try:
            m.kill_all(timeout=10)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait(timeout=10)
            m.remove(timeout=10)
    assert not m.exists()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_v2_kill_all_on_real_cgroup2(
    v2cg: cgroups.Manager, procs: list[subprocess.Popen[bytes]], sig: int
) -> None:
    """SIGKILL goes through cgroup.kill; SIGTERM through freeze, signal each pid, thaw."""
    v2cg.create()
    p = spawn(procs, v2cg, "sh", "-c", "sleep 100 & sleep 100 & wait")
    wait_for(lambda: len(v2cg.pids()) == 3)
    victims = v2cg.pids()
    assert v2cg.freeze() is True
    v2cg.thaw()
    assert v2cg.kill_all(sig) is True
    p.wait(timeout=5)
    assert not any(alive(pid) for pid in victims)
    v2cg.remove()
    assert not v2cg.exists()


def test_limits_add_pid_kill_remove(cg: cgroups.Manager, procs: list[subprocess.Popen[bytes]]) -> None:
    cg.create()
    assert cg.container_id in cgroups.list_containers()
    cg.apply(Resources(memory=64 * M, cpus=0.5, cpu_shares=512, pids=32))
    p = subprocess.Popen(["sleep", "100"])
    procs.append(p)
    cg.add_pid(p.pid)
    assert cg.pids() == [p.pid]

    paths = {k: Path(v) for k, v in cg.paths().items()}  # the managers return str paths
    if cg.mode == "unified":
        d = paths["unified"]
        assert (d / "memory.max").read_text().strip() == str(64 * M)
        assert (d / "memory.swap.max").read_text().strip() in ("0", "")
        assert (d / "cpu.max").read_text().strip() == "50000 100000"
        assert (d / "cpu.weight").read_text().strip() == "20"
        assert (d / "pids.max").read_text().strip() == "32"
        assert proc_cgroups(p.pid)[""] == f"/devbox/{cg.container_id}"
    else:
        assert (paths["memory"] / "memory.limit_in_bytes").read_text().strip() == str(64 * M)
        memsw = paths["memory"] / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            assert memsw.read_text().strip() == str(64 * M)
        assert (paths["cpu"] / "cpu.cfs_period_us").read_text().strip() == "100000"
        assert (paths["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (paths["cpu"] / "cpu.shares").read_text().strip() == "512"
        assert (paths["pids"] / "pids.max").read_text().strip() == "32"
        where = proc_cgroups(p.pid)
        for ctrl in ("memory", "cpu", "cpuacct", "pids", "freezer", "name=systemd"):
            matching = [v for k, v in where.items() if ctrl in k.split(",")]
            assert matching == [f"/devbox/{cg.container_id}"], (ctrl, where)
        if cg.mode == "hybrid":
            assert where[""] == f"/devbox/{cg.container_id}"

    stats = cg.stats()
    assert stats["memory_limit"] == 64 * M
    assert stats["pids_current"] == 1 and stats["pids_limit"] == 32
    assert isinstance(stats["memory_usage"], int) and isinstance(stats["cpu_usage_usec"], int)

    assert cg.kill_all() is True
    assert p.wait(timeout=5) == -signal.SIGKILL
    assert cg.pids() == []
    cg.remove()
    assert not cg.exists()
    assert leftover_dirs(cg.container_id) == []
    assert cg.container_id not in cgroups.list_containers()


def test_kill_all_gets_forked_children(cg: cgroups.Manager, procs: list[subprocess.Popen[bytes]]) -> None:
    cg.create()
    p = spawn(procs, cg, "sh", "-c", "sleep 100 & sleep 100 & wait")
    wait_for(lambda: len(cg.pids()) == 3)
    victims = cg.pids()
    assert p.pid in victims
    assert cg.kill_all() is True
    p.wait(timeout=5)
    assert not any(alive(pid) for pid in victims)  # orphaned sleeps included: reparented, then killed
    assert cg.pids() == []
    cg.remove()
    assert leftover_dirs(cg.container_id) == []


def test_kill_all_against_a_fork_loop(cg: cgroups.Manager, procs: list[subprocess.Popen[bytes]]) -> None:
    """Processes fork as fast as they can while kill_all runs: freezing stops them, all die."""
    cg.create()
    cg.apply(Resources(pids=64))
    spawn(procs, cg, "sh", "-c", "while :; do sleep 100 & done")
    wait_for(lambda: len(cg.pids()) >= 20)
    assert cg.kill_all(timeout=10) is True
    assert cg.pids() == []


def test_pids_limit_is_enforced(cg: cgroups.Manager, procs: list[subprocess.Popen[bytes]]) -> None:
    cg.create()
    cg.apply(Resources(pids=4))
    p = spawn(procs, cg, "sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 100 & done; wait")
    wait_for(lambda: p.poll() is not None or len(cg.pids()) >= 4)
    time.sleep(0.3)
    assert len(cg.pids()) <= 4
    cg.kill_all()


def test_memory_limit_is_enforced(cg: cgroups.Manager, procs: list[subprocess.Popen[bytes]]) -> None:
    cg.create()
    cg.apply(Resources(memory=64 * M))
    p = spawn(procs, cg, "python3", "-c", "b = b'x' * (256 << 20); print(len(b))")
    assert p.wait(timeout=30) == -signal.SIGKILL  # OOM-killed, no swap to escape to


def test_sigterm_is_delivered_once(cg: cgroups.Manager, procs: list[subprocess.Popen[bytes]]) -> None:
    cg.create()
    p = spawn(procs, cg, "sleep", "100")
    wait_for(lambda: cg.pids() == [p.pid])
    assert cg.kill_all(signal.SIGTERM, timeout=5) is True
    assert p.wait(timeout=5) == -signal.SIGTERM


def test_join_paths_cover_every_hierarchy(cg: cgroups.Manager) -> None:
    cg.create()
    joins = cg.join_paths()
    assert cg.procs_path() in joins
    assert all(os.path.exists(j) for j in joins)
    if cg.mode != "unified":
        hierarchies = {os.path.realpath(Path(j).parent.parent.parent) for j in joins}
        expected = {
            os.path.realpath(ROOT / n)
            for n in ("memory", "cpu", "cpuacct", "pids", "freezer", "systemd")
            if (ROOT / n).is_dir()
        }
        if cg.mode == "hybrid":
            expected.add(os.path.realpath(ROOT / "unified"))
        assert hierarchies == expected


def test_remove_is_tolerant(cg: cgroups.Manager) -> None:
    cg.remove()  # never created
    cg.create()
    cg.create()  # idempotent
    cg.remove()
    cg.remove()
    assert leftover_dirs(cg.container_id) == []
