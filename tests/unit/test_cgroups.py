"""cgroups against fake trees under tmp_path, laid out as the kernel would (v2, hybrid, legacy with a
co-mounted cpu,cpuacct). Every write goes through `cgroups.write`, which is recorded."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from devbox.errors import CgroupError
from devbox.runtime import cgroups, linux
from devbox.runtime.cgroups.v1 import V1Manager
from devbox.runtime.cgroups.v2 import V2Manager
from devbox.runtime.resources import Resources

M = 1024 * 1024
V1_UNLIMITED = "9223372036854771712"

V2_FILES = {
    "cgroup.procs": "",
    "cgroup.events": "populated 0\nfrozen 0",
    "cgroup.freeze": "0",
    "cgroup.kill": "",
    "cgroup.controllers": "",
    "cgroup.subtree_control": "",
    "memory.max": "max",
    "memory.swap.max": "max",
    "memory.current": "1234",
    "cpu.max": "max 100000",
    "cpu.weight": "100",
    "cpu.stat": "usage_usec 4242\nuser_usec 4000\nsystem_usec 242",
    "pids.max": "max",
    "pids.current": "3",
}

V1_FILES = {
    "memory": {
        "memory.limit_in_bytes": V1_UNLIMITED,
        "memory.memsw.limit_in_bytes": V1_UNLIMITED,
        "memory.usage_in_bytes": "5000",
    },
    "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1", "cpu.shares": "1024"},
    "cpuacct": {"cpuacct.usage": "7000000"},
    "pids": {"pids.max": "max", "pids.current": "2"},
    "freezer": {"freezer.state": "THAWED"},
    "systemd": {},
    "unified": {},
}


def _P(x: object) -> object:
    """The managers speak plain str paths (paths.py says why): as Paths, for comparing with tmp_path."""
    if isinstance(x, dict):
        return {k: Path(v) for k, v in x.items()}
    if isinstance(x, list):
        return [Path(v) for v in x]
    return Path(x)  # type: ignore[arg-type]


def touch(d: Path | str, files: dict[str, str]) -> None:
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    (d / "cgroup.procs").write_text("")
    for name, content in files.items():
        (d / name).write_text(content)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every (path, value) written through cgroups.write, in order; the file gets the value too."""
    log: list[tuple[str, str]] = []
    real = cgroups.write

    def record(path: Path, value: str | int, hint: str | None = None) -> None:
        log.append((os.fspath(path), str(value)))
        real(path, value, hint)

    monkeypatch.setattr(cgroups, "write", record)
    return log


def _populate(monkeypatch: pytest.MonkeyPatch, procs_files: list[Path]) -> list[int]:
    """Give a fake cgroup one process (a pid beyond pid_max: signalling it can reach nobody) that
    goes away, as the kernel would do it, once it is signalled or cgroup.kill is written."""
    ghost = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    for f in procs_files:
        f.write_text(f"{ghost}\n")
    signalled: list[int] = []
    real_write = cgroups.write

    def gone() -> None:
        for f in procs_files:
            f.write_text("")

    def fake_signal(pids: object, sig: int) -> None:
        signalled.extend(pids)  # type: ignore[call-overload]
        gone()

    def write(path: Path, value: str | int, hint: str | None = None) -> None:
        real_write(path, value, hint)
        if Path(path).name == "cgroup.kill":
            gone()

    from devbox.runtime.cgroups import v1, v2

    monkeypatch.setattr(v1, "signal_pids", fake_signal)
    monkeypatch.setattr(v2, "signal_pids", fake_signal)
    monkeypatch.setattr(cgroups, "write", write)
    return signalled


# ---- v2 --------------------------------------------------------------------------------------------


def v2_tree(root: Path, controllers: str = "cpuset cpu io memory hugetlb pids rdma misc") -> Path:
    touch(root, {"cgroup.controllers": controllers, "cgroup.subtree_control": ""})
    return root


def v2_kernel_mkdir(d: Path, controllers: list[str]) -> None:
    """What the kernel puts in a new cgroup2 dir whose parent enabled `controllers`."""
    files = {k: v for k, v in V2_FILES.items() if k.split(".")[0] in ("cgroup", *controllers)}
    files["cgroup.controllers"] = " ".join(controllers)
    touch(d, files)


def test_v2_create_enables_controllers_root_and_group(tmp_path: Path, writes: list[tuple[str, str]]) -> None:
    root = v2_tree(tmp_path, controllers="cpuset cpu io memory pids")
    (root / "devbox").mkdir()
    v2_kernel_mkdir(root / "devbox", ["cpu", "memory", "pids"])
    m = cgroups.manager_for("c1", root=root, mode="unified")
    assert isinstance(m, V2Manager)
    m.create()
    assert (root / "devbox" / "c1").is_dir()
    sc_root, sc_group = (
        os.fspath(root / "cgroup.subtree_control"),
        os.fspath(root / "devbox/cgroup.subtree_control"),
    )
    assert writes == [
        (sc_root, "+memory"),
        (sc_root, "+cpu"),
        (sc_root, "+pids"),
        (sc_group, "+memory"),
        (sc_group, "+cpu"),
        (sc_group, "+pids"),
    ]
    assert _P(m.paths()) == {"unified": root / "devbox/c1"}
    assert _P(m.join_paths()) == [root / "devbox/c1/cgroup.procs"]
    assert _P(m.procs_path()) == root / "devbox/c1/cgroup.procs"


def test_v2_create_enables_only_what_is_offered_and_missing(
    tmp_path: Path, writes: list[tuple[str, str]]
) -> None:
    root = v2_tree(tmp_path, controllers="cpu memory")
    (root / "cgroup.subtree_control").write_text("memory")
    (root / "devbox").mkdir()
    v2_kernel_mkdir(root / "devbox", ["memory"])
    (root / "devbox/cgroup.subtree_control").write_text("memory")
    cgroups.manager_for("c1", root=root, mode="unified").create()
    assert writes == [(os.fspath(root / "cgroup.subtree_control"), "+cpu")]


def test_v2_create_is_idempotent(tmp_path: Path) -> None:
    root = v2_tree(tmp_path)
    m = cgroups.manager_for("c1", root=root, mode="unified")
    m.create()
    m.create()
    assert m.exists()


def make_v2(tmp_path: Path, controllers: list[str] | None = None) -> V2Manager:
    root = v2_tree(tmp_path)
    m = cgroups.manager_for("c1", root=root, mode="unified")
    m.create()
    v2_kernel_mkdir(
        root / "devbox/c1", controllers if controllers is not None else ["cpu", "memory", "pids"]
    )
    assert isinstance(m, V2Manager)
    return m


def test_v2_apply_writes_exact_values(tmp_path: Path, writes: list[tuple[str, str]]) -> None:
    m = make_v2(tmp_path)
    writes.clear()
    m.apply(Resources(memory=64 * M, cpus=0.5, cpu_shares=512, pids=32))
    d = Path(m.dir)
    assert writes == [
        (os.fspath(d / "memory.max"), str(64 * M)),
        (os.fspath(d / "memory.swap.max"), "0"),
        (os.fspath(d / "cpu.max"), "50000 100000"),
        (os.fspath(d / "cpu.weight"), str(1 + (510 * 9999) // 262142)),
        (os.fspath(d / "pids.max"), "32"),
    ]
    assert (d / "cpu.weight").read_text() == "20"


def test_v2_apply_none_resets_to_unlimited(tmp_path: Path, writes: list[tuple[str, str]]) -> None:
    m = make_v2(tmp_path)
    m.apply(Resources(memory=64 * M, cpus=2, pids=32))
    writes.clear()
    m.apply(Resources())
    assert [(Path(p).name, v) for p, v in writes] == [
        ("memory.max", "max"),
        ("memory.swap.max", "max"),
        ("cpu.max", "max 100000"),
        ("cpu.weight", "100"),
        ("pids.max", "max"),
    ]


def test_v2_apply_without_controller_names_it(tmp_path: Path) -> None:
    m = make_v2(tmp_path, controllers=["cpu"])
    m.apply(Resources(cpus=1))  # fine: cpu is there, memory/pids are None
    with pytest.raises(CgroupError) as e:
        m.apply(Resources(memory=64 * M))
    assert "memory controller is not available" in e.value.message
    assert "cgroup.subtree_control" in (e.value.hint or "")


def test_v2_write_error_names_file_and_value(tmp_path: Path) -> None:
    m = make_v2(tmp_path)
    (Path(m.dir) / "pids.max").unlink()
    (Path(m.dir) / "pids.max").mkdir()  # writing to it fails with EISDIR
    with pytest.raises(CgroupError) as e:
        m.apply(Resources(pids=32))
    assert e.value.message.startswith(f"cannot write '32' to {Path(m.dir) / 'pids.max'}: ")
    assert e.value.hint


def test_v2_add_pid_pids_stats(tmp_path: Path, writes: list[tuple[str, str]]) -> None:
    m = make_v2(tmp_path)
    writes.clear()
    m.add_pid(4321)
    assert writes == [(os.fspath(Path(m.dir) / "cgroup.procs"), "4321")]
    (Path(m.dir) / "cgroup.procs").write_text("12\n7\n")
    (Path(m.dir) / "sub").mkdir()
    (Path(m.dir) / "sub/cgroup.procs").write_text("99\n")
    assert m.pids() == [7, 12, 99]
    (Path(m.dir) / "memory.max").write_text(str(64 * M))
    (Path(m.dir) / "memory.stat").write_text("anon 1000\nfile 2000\ninactive_file 234\n")
    assert m.stats() == {
        "memory_usage": 1000,
        "memory_limit": 64 * M,
        "pids_current": 3,
        "pids_limit": None,
        "cpu_usage_usec": 4242,
    }


def test_v2_kill_all_uses_cgroup_kill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = make_v2(tmp_path)
    writes: list[tuple[str, str]] = []
    _populate(monkeypatch, [Path(m.dir) / "cgroup.procs"])
    inner = cgroups.write
    monkeypatch.setattr(cgroups, "write", lambda p, v, h=None: (writes.append((os.fspath(p), str(v))), inner(p, v, h)))
    assert m.kill_all() is True
    assert writes == [(os.fspath(Path(m.dir) / "cgroup.kill"), "1")]


def test_kill_all_of_an_empty_cgroup_writes_nothing(tmp_path: Path, writes: list[tuple[str, str]]) -> None:
    """The usual case after a run: nothing left to freeze or kill, so no freezer round trip."""
    m2, m1 = make_v2(tmp_path / "v2"), make_v1(tmp_path / "v1")
    writes.clear()
    assert m2.kill_all() is True and m1.kill_all() is True
    assert writes == []


def test_v2_kill_all_without_cgroup_kill_freezes(tmp_path: Path, writes: list[tuple[str, str]],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    m = make_v2(tmp_path)
    (Path(m.dir) / "cgroup.kill").unlink()
    (Path(m.dir) / "cgroup.events").write_text("populated 0\nfrozen 1")
    signalled = _populate(monkeypatch, [Path(m.dir) / "cgroup.procs"])
    writes.clear()
    assert m.kill_all(signal.SIGTERM, timeout=0.1) is True
    assert [(Path(p).name, v) for p, v in writes] == [("cgroup.freeze", "1"), ("cgroup.freeze", "0")]
    assert len(signalled) == 1


def test_v2_remove_tolerates_missing_and_removes_subcgroups(tmp_path: Path) -> None:
    m = make_v2(tmp_path)
    for f in list(Path(m.dir).iterdir()):  # the kernel's files vanish with rmdir; the fake must empty the dir
        f.unlink()
    (Path(m.dir) / "nested/deeper").mkdir(parents=True)
    m.remove()
    assert not m.exists()
    m.remove()  # already gone: fine
    assert m.kill_all() is True and m.pids() == []


# ---- v1: hybrid and legacy ---------------------------------------------------------------------------


def v1_tree(root: Path, comount: bool = False, hybrid: bool = True) -> Path:
    for name in V1_FILES:
        if name == "unified" and not hybrid:
            continue
        if comount and name in ("cpu", "cpuacct"):
            continue
        touch(root / name, {})
    if comount:
        touch(root / "cpu,cpuacct", {})
        (root / "cpu").symlink_to("cpu,cpuacct")
        (root / "cpuacct").symlink_to("cpu,cpuacct")
    return root


def v1_kernel_mkdir(m: V1Manager, missing: tuple[str, ...] = ()) -> None:
    for name, d in _P(m.paths()).items():
        if name in missing:
            continue
        files = dict(V1_FILES[name])
        if name in ("cpu", "cpuacct") and os.path.realpath(d.parent.parent) == os.path.realpath(
            d.parent.parent.parent / "cpu,cpuacct"
        ):
            files = {**V1_FILES["cpu"], **V1_FILES["cpuacct"]}
        touch(d, files)


def make_v1(
    tmp_path: Path, comount: bool = False, hybrid: bool = True, missing: tuple[str, ...] = ()
) -> V1Manager:
    root = v1_tree(tmp_path, comount=comount, hybrid=hybrid)
    m = cgroups.manager_for("c1", root=root, mode="hybrid" if hybrid else "legacy")
    assert isinstance(m, V1Manager)
    m.create()
    v1_kernel_mkdir(m, missing)
    return m


def test_v1_hybrid_layout(tmp_path: Path) -> None:
    m = make_v1(tmp_path)
    names = ["memory", "cpu", "cpuacct", "pids", "freezer", "systemd", "unified"]
    assert _P(m.paths()) == {n: tmp_path / n / "devbox/c1" for n in names}
    assert _P(m.join_paths()) == [tmp_path / n / "devbox/c1/cgroup.procs" for n in names]
    assert _P(m.procs_path()) == tmp_path / "memory/devbox/c1/cgroup.procs"
    assert all((tmp_path / n / "devbox/c1").is_dir() for n in names)
    assert m.mode == "hybrid"


def test_v1_layout_is_looked_up_once_per_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command builds several managers (reconcile, start, teardown): the hierarchies are found and
    resolved once, and each manager still gets its own container's directories, co-mounts merged."""
    root = v1_tree(tmp_path, comount=True)
    calls: list[str] = []
    real = os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda p, *a, **k: calls.append(os.fspath(p)) or real(p, *a, **k))
    a = cgroups.manager_for("a1", root=root, mode="hybrid")
    first = len(calls)
    b = cgroups.manager_for("b2", root=root, mode="hybrid")
    assert first == 7 and len(calls) == first
    assert _P(a.join_paths()) == [tmp_path / n / "devbox/a1/cgroup.procs"
                              for n in ("memory", "cpu", "pids", "freezer", "systemd", "unified")]
    assert _P(b.join_paths()) == [p.parent.parent / "b2/cgroup.procs" for p in _P(a.join_paths())]


def test_v1_legacy_has_no_unified(tmp_path: Path) -> None:
    m = make_v1(tmp_path, hybrid=False)
    assert "unified" not in _P(m.paths()) and m.mode == "legacy"


def test_v1_comounted_cpu_cpuacct_is_one_directory(tmp_path: Path, writes: list[tuple[str, str]]) -> None:
    m = make_v1(tmp_path, comount=True)
    assert _P(m.paths())["cpu"] == tmp_path / "cpu/devbox/c1"
    assert _P(m.paths())["cpuacct"] == tmp_path / "cpuacct/devbox/c1"
    real = [os.path.realpath(p) for p in _P(m.join_paths())]
    assert len(real) == len(set(real)) == 6
    assert (tmp_path / "cpu,cpuacct/devbox/c1").is_dir()
    writes.clear()
    m.add_pid(55)
    assert len(writes) == 6


def test_v1_comount_without_symlinks(tmp_path: Path) -> None:
    root = v1_tree(tmp_path, comount=True)
    (root / "cpu").unlink()
    (root / "cpuacct").unlink()
    m = cgroups.manager_for("c1", root=root, mode="hybrid")
    assert _P(m.paths())["cpu"] == root / "cpu,cpuacct/devbox/c1" == _P(m.paths())["cpuacct"]


def test_v1_apply_writes_exact_values(tmp_path: Path, writes: list[tuple[str, str]]) -> None:
    m = make_v1(tmp_path)
    writes.clear()
    m.apply(Resources(memory=64 * M, cpus=0.5, cpu_shares=512, pids=32))
    rel = [(os.path.relpath(p, tmp_path), v) for p, v in writes]
    assert rel == [
        ("memory/devbox/c1/memory.limit_in_bytes", str(64 * M)),  # lowering: limit before memsw
        ("memory/devbox/c1/memory.memsw.limit_in_bytes", str(64 * M)),
        ("cpu/devbox/c1/cpu.cfs_period_us", "100000"),
        ("cpu/devbox/c1/cpu.cfs_quota_us", "50000"),
        ("cpu/devbox/c1/cpu.shares", "512"),
        ("pids/devbox/c1/pids.max", "32"),
    ]


def test_v1_memory_raise_writes_memsw_first(tmp_path: Path, writes: list[tuple[str, str]]) -> None:
    m = make_v1(tmp_path)
    m.apply(Resources(memory=64 * M))
    writes.clear()
    m.apply(Resources(memory=128 * M))
    assert [Path(p).name for p, _ in writes][:2] == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
    writes.clear()
    m.apply(Resources())
    assert [(Path(p).name, v) for p, v in writes] == [
        ("memory.memsw.limit_in_bytes", "-1"),
        ("memory.limit_in_bytes", "-1"),
        ("cpu.cfs_quota_us", "-1"),
        ("cpu.shares", "1024"),
        ("pids.max", "max"),
    ]


def test_v1_no_swap_accounting(tmp_path: Path, writes: list[tuple[str, str]]) -> None:
    m = make_v1(tmp_path)
    (_P(m.paths())["memory"] / "memory.memsw.limit_in_bytes").unlink()
    writes.clear()
    m.apply(Resources(memory=64 * M))
    assert [Path(p).name for p, _ in writes if "memory" in p] == ["memory.limit_in_bytes"]


def test_v1_missing_controller(tmp_path: Path) -> None:
    m = make_v1(tmp_path, missing=("pids",))
    m.apply(Resources(memory=64 * M))
    with pytest.raises(CgroupError) as e:
        m.apply(Resources(pids=10))
    assert "pids cgroup controller is not available" in e.value.message
    assert e.value.hint and "mount" in e.value.hint


def test_v1_kill_all_freezes_and_thaws(tmp_path: Path, writes: list[tuple[str, str]],
                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    m = make_v1(tmp_path)
    signalled = _populate(monkeypatch, [Path(d, "cgroup.procs") for d in m.dirs()])
    writes.clear()
    assert m.kill_all() is True
    assert len(signalled) == 1
    assert [(os.path.relpath(p, tmp_path), v) for p, v in writes] == [
        ("freezer/devbox/c1/freezer.state", "FROZEN"),
        ("freezer/devbox/c1/freezer.state", "THAWED"),
    ]


def test_v1_pids_union_and_stats(tmp_path: Path) -> None:
    m = make_v1(tmp_path)
    (_P(m.paths())["memory"] / "cgroup.procs").write_text("10\n11\n")
    (_P(m.paths())["freezer"] / "cgroup.procs").write_text("11\n12\n")
    assert m.pids() == [10, 11, 12]
    assert m.stats() == {
        "memory_usage": 5000,
        "memory_limit": None,
        "pids_current": 2,
        "pids_limit": None,
        "cpu_usage_usec": 7000,
    }


def test_v1_remove_every_hierarchy(tmp_path: Path) -> None:
    m = make_v1(tmp_path, comount=True)
    for d in m.dirs():
        for f in Path(d).iterdir():
            f.unlink()
    m.remove()
    assert not m.exists()
    assert not any(
        (tmp_path / n / "devbox/c1").exists() for n in ["memory", "cpu,cpuacct", "pids", "unified"]
    )
    m.remove()


def test_v1_remove_busy_times_out_with_hint(tmp_path: Path) -> None:
    m = make_v1(tmp_path)  # fake kernel files left inside: rmdir says ENOTEMPTY, not EBUSY, on a real fs
    with pytest.raises(CgroupError) as e:
        m.remove(timeout=0.05)
    assert "cannot remove cgroup" in e.value.message


# ---- detect, list, helpers ----------------------------------------------------------------------------


def test_detect_by_statfs_magic(tmp_path: Path) -> None:
    (tmp_path / "unified").mkdir()
    magics: dict[str, int] = {}

    def fake_statfs(path: str) -> int:
        return magics.get(path, 0xEF53)

    magics[os.fspath(tmp_path)] = linux.CGROUP2_SUPER_MAGIC
    assert cgroups.detect(tmp_path, statfs=fake_statfs) == "unified"
    magics[os.fspath(tmp_path)] = linux.TMPFS_MAGIC
    assert cgroups.detect(tmp_path, statfs=fake_statfs) == "legacy"
    magics[os.fspath(tmp_path / "unified")] = linux.CGROUP2_SUPER_MAGIC
    assert cgroups.detect(tmp_path, statfs=fake_statfs) == "hybrid"
    magics[os.fspath(tmp_path)] = 0xEF53
    with pytest.raises(CgroupError, match="not a cgroup filesystem"):
        cgroups.detect(tmp_path, statfs=fake_statfs)


def test_list_containers(tmp_path: Path) -> None:
    root = v1_tree(tmp_path)
    (root / "memory/devbox/aaa").mkdir(parents=True)
    (root / "pids/devbox/bbb").mkdir(parents=True)
    (root / "unified/devbox/aaa").mkdir(parents=True)
    (root / "memory/devbox/cgroup.procs").write_text("")
    assert cgroups.list_containers(root, mode="hybrid") == ["aaa", "bbb"]
    v2 = tmp_path / "v2"
    v2.mkdir()
    assert cgroups.list_containers(v2, mode="unified") == []
    (v2 / "devbox/x1").mkdir(parents=True)
    assert cgroups.list_containers(v2, mode="unified") == ["x1"]


@pytest.mark.parametrize("bad", ["", "..", ".", "a/b", "-x", "x" * 200])
def test_container_id_must_be_a_plain_name(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        cgroups.manager_for(bad, root=tmp_path, mode="unified")


def test_shares_to_weight() -> None:
    assert cgroups.shares_to_weight(2) == 1
    assert cgroups.shares_to_weight(262144) == 10000
    assert cgroups.shares_to_weight(1024) == 39
    assert cgroups.cpu_quota(0.5) == 50000
    assert cgroups.cpu_quota(0.001) == 1000
