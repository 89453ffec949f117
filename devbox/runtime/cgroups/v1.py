"""cgroup v1 (legacy and hybrid): <hierarchy>/devbox/<id> under every hierarchy devbox uses.

Hierarchies: memory, cpu, cpuacct (often co-mounted as `cpu,cpuacct` with `cpu` and `cpuacct` symlinks:
each real directory is created once), pids, freezer, name=systemd (`systemd/`, so the process is
tracked where systemd looks), and in hybrid mode the cgroup2 tree at `unified/` (tracking only: no
controllers are enabled there). cpuset, devices, blkio... are not used, so the container stays in
the caller's cgroup in those.

Limits:
  memory      memory.limit_in_bytes = bytes and memory.memsw.limit_in_bytes = the same (when swap
              accounting is on): no swap beyond the limit, as on v2 (memory.swap.max = 0). The two are
              written in the order the kernel accepts (memsw >= limit at every step). None -> -1.
  cpus        cpu.cfs_period_us = 100000, cpu.cfs_quota_us = cpus * 100000; None -> quota -1.
  cpu_shares  cpu.shares; None -> 1024 (the kernel default).
  pids        pids.max; None -> "max".
"""

from __future__ import annotations

import _signal as signal  # the C module: signal.py's enums cost ~1 ms to import
import os
import time

from devbox.errors import CgroupError
from devbox.runtime import cgroups as _cg
from devbox.runtime.cgroups import (
    CPU_PERIOD_US,
    GROUP,
    Mode,
    cpu_quota,
    memory_usage,
    read,
    read_int,
    read_keyed,
    read_procs,
    rmdir_tree,
    signal_pids,
    wait_empty,
)
from devbox.runtime.resources import Resources

HIERARCHIES = ("memory", "cpu", "cpuacct", "pids", "freezer", "systemd")
UNLIMITED = 1 << 62  # v1 reports "no limit" as LONG_MAX rounded down to a page


def hierarchy_dirs(root: str, hybrid: bool) -> dict[str, str]:
    """Name -> mount point of each hierarchy devbox uses that exists under `root`.

    `cpu` and `cpuacct` are found through their symlinks or, if those are missing, through a
    co-mounted directory such as `cpu,cpuacct`."""
    out: dict[str, str] = {}
    try:
        entries = sorted(os.listdir(root))
    except FileNotFoundError:
        entries = []
    for name in HIERARCHIES:
        p = os.path.join(root, name)
        if os.path.isdir(p):
            out[name] = p
            continue
        for e in entries:
            if name in e.split(",") and os.path.isdir(os.path.join(root, e)):
                out[name] = os.path.join(root, e)
                break
    if hybrid and os.path.isdir(os.path.join(root, "unified")):
        out["unified"] = os.path.join(root, "unified")
    return out


_LAYOUTS: dict[tuple[str, bool], tuple[dict[str, str], list[str]]] = {}


def _layout(root: str, hybrid: bool) -> tuple[dict[str, str], list[str]]:
    """hierarchy_dirs(root, hybrid) and the names of the distinct hierarchies among them (co-mounted
    cpu,cpuacct are one directory), found once per process: a command builds several managers, and
    the listing, is_dir and realpath calls cost ~0.2 ms per manager. Mounting or unmounting a hierarchy while
    one devbox command runs is not supported (nor would it be with a fresh look per manager)."""
    key = (os.fspath(root), hybrid)
    hit = _LAYOUTS.get(key)
    if hit is None:
        hier = hierarchy_dirs(root, hybrid)
        seen: set[str] = set()
        distinct: list[str] = []
        for name, d in hier.items():
            real = os.path.realpath(d)
            if real not in seen:
                seen.add(real)
                distinct.append(name)
        hit = _LAYOUTS[key] = (hier, distinct)
    return hit


class V1Manager:
    def __init__(self, container_id: str, root: str, hybrid: bool) -> None:
        self.container_id = container_id
        self.root = root
        self.mode: Mode = "hybrid" if hybrid else "legacy"
        self._hier, distinct = _layout(root, hybrid)
        self._paths = {name: os.path.join(d, GROUP, container_id) for name, d in self._hier.items()}
        # One directory per real hierarchy: co-mounted cpu,cpuacct are the same directory.
        self._dirs: list[str] = [self._paths[name] for name in distinct]

    # -- layout ---------------------------------------------------------------------------------------

    def paths(self) -> dict[str, str]:
        return dict(self._paths)

    def dirs(self) -> list[str]:
        """The distinct cgroup directories (one per mounted hierarchy)."""
        return list(self._dirs)

    def procs_path(self) -> str:
        main = self._paths.get("memory") or self._paths.get("pids") or self._dirs[0]
        return os.path.join(main, "cgroup.procs")

    def join_paths(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self._dirs]

    def exists(self) -> bool:
        return any(os.path.isdir(d) for d in self._dirs)

    # -- lifecycle ------------------------------------------------------------------------------------

    def create(self) -> None:
        if not self._dirs:
            raise CgroupError(
                f"no cgroup v1 hierarchy found under {self.root}",
                hint="mount the cgroup controllers (memory, cpu, pids, freezer)",
            )
        for d in self._dirs:
            try:
                os.makedirs(d, exist_ok=True)
            except OSError as e:
                raise CgroupError(
                    f"cannot create cgroup {d}: {e.strerror}",
                    hint="devbox must run as root with /sys/fs/cgroup writable",
                ) from e

    def _file(self, controller: str, filename: str, required: bool) -> str | None:
        d = self._paths.get(controller)
        p = os.path.join(d, filename) if d is not None else None
        if p is not None and os.path.exists(p):
            return p
        if required:
            raise CgroupError(
                f"the {controller} cgroup controller is not available (no {filename} under "
                f"{d or os.path.join(self.root, controller)})",
                hint=f"mount it: mount -t cgroup -o {controller} cgroup {os.path.join(self.root, controller)}",
            )
        return None

    def apply(self, resources: Resources) -> None:
        r = resources
        limit = self._file("memory", "memory.limit_in_bytes", required=r.memory is not None)
        if limit is not None:
            memsw = self._file("memory", "memory.memsw.limit_in_bytes", required=False)
            value = r.memory if r.memory is not None else -1
            current = read_int(limit)
            raising = value == -1 or current is None or value >= current
            # Keep memsw >= limit at each step: raise memsw first, lower the limit first.
            order = [memsw, limit] if raising else [limit, memsw]
            for p in order:
                if p is not None:
                    _cg.write(p, value)

        quota = self._file("cpu", "cpu.cfs_quota_us", required=r.cpus is not None)
        if quota is not None:
            if r.cpus is not None:
                period = self._file("cpu", "cpu.cfs_period_us", required=True)
                assert period is not None
                _cg.write(period, CPU_PERIOD_US)
                _cg.write(quota, cpu_quota(r.cpus))
            else:
                _cg.write(quota, -1)

        shares = self._file("cpu", "cpu.shares", required=r.cpu_shares is not None)
        if shares is not None:
            _cg.write(shares, r.cpu_shares if r.cpu_shares is not None else 1024)

        pids_max = self._file("pids", "pids.max", required=r.pids is not None)
        if pids_max is not None:
            _cg.write(pids_max, r.pids if r.pids is not None else "max")

    def add_pid(self, pid: int) -> None:
        for p in self.join_paths():
            _cg.write(p, pid)

    def pids(self) -> list[int]:
        return read_procs(d for d in self._dirs if os.path.isdir(d))

    def freeze(self, timeout: float = 5.0) -> bool:
        d = self._paths.get("freezer")
        if d is None or not os.path.exists(os.path.join(d, "freezer.state")):
            return False
        deadline = time.monotonic() + timeout
        while True:
            # As runc does: re-request FROZEN until the state reads FROZEN (FREEZING can stall when a
            # task is mid-fork; asking again makes the kernel retry).
            _cg.write(os.path.join(d, "freezer.state"), "FROZEN")
            if read(os.path.join(d, "freezer.state")) == "FROZEN":
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)

    def thaw(self) -> None:
        d = self._paths.get("freezer")
        if d is not None and os.path.exists(os.path.join(d, "freezer.state")):
            _cg.write(os.path.join(d, "freezer.state"), "THAWED")

    def kill_all(self, sig: int = signal.SIGKILL, timeout: float = 5.0) -> bool:
        if not self.exists():
            return True
        if not self.pids():
            return True  # empty (the usual case after a run): nothing in it can fork, no freeze needed
        deadline = time.monotonic() + timeout
        while True:
            # Frozen, nothing can fork; a v1-frozen task acts on the signal once thawed.
            self.freeze(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            try:
                signal_pids(self.pids(), sig)
            finally:
                self.thaw()
            if sig != signal.SIGKILL:
                return wait_empty(self, deadline)
            if wait_empty(self, min(deadline, time.monotonic() + 0.2)):
                return True
            if time.monotonic() >= deadline:
                left = self.pids()
                raise CgroupError(
                    f"processes {left} of container {self.container_id} survived SIGKILL for {timeout}s",
                    hint="they are probably stuck in the kernel (D state: a hung NFS or FUSE mount); "
                    "see /proc/PID/stack",
                )

    def remove(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        for d in self._dirs:
            rmdir_tree(d, deadline)

    def stats(self) -> dict[str, int | None]:
        mem = self._paths.get("memory")
        pids = self._paths.get("pids")
        acct = self._paths.get("cpuacct")
        limit = read_int(os.path.join(mem, "memory.limit_in_bytes")) if mem else None
        usage_ns = read_int(os.path.join(acct, "cpuacct.usage")) if acct else None
        return {
            "memory_usage": memory_usage(
                read_int(os.path.join(mem, "memory.usage_in_bytes")),
                read_keyed(os.path.join(mem, "memory.stat")).get("total_inactive_file"),
            )
            if mem
            else None,
            "memory_limit": None if limit is None or limit >= UNLIMITED else limit,
            "pids_current": read_int(os.path.join(pids, "pids.current")) if pids else None,
            "pids_limit": read_int(os.path.join(pids, "pids.max")) if pids else None,
            "cpu_usage_usec": None if usage_ns is None else usage_ns // 1000,
        }

    def __repr__(self) -> str:
        return f"V1Manager({self.container_id!r}, {os.fspath(self.root)!r}, mode={self.mode!r})"
