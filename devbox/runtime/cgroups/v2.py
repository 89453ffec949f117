"""cgroup v2 (unified): ROOT/devbox/<id>, with memory, cpu and pids enabled from the root down.

Limits:
  memory      memory.max = bytes, and memory.swap.max = 0: the limit is a real limit, as with v1's
              memory.memsw.limit_in_bytes = memory.limit_in_bytes (docker's default --memory-swap is
              twice the memory; devbox boxes are development machines, where swapping instead of an
              OOM kill only hides the problem). None resets both to "max".
  cpus        cpu.max = "<cpus * 100000> 100000"; None -> "max 100000".
  cpu_shares  cpu.weight = 1 + ((shares - 2) * 9999) // 262142; None -> 100 (the kernel default).
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
    shares_to_weight,
    signal_pids,
    wait_empty,
)
from devbox.runtime.resources import Resources

CONTROLLERS = ("memory", "cpu", "pids")

_ENABLE_HINT = (
    "the parent cgroup does not delegate this controller; on systemd machines it is usually enabled at "
    "the root already, otherwise: echo +{c} > {path}"
)


def _mkdir(path: str) -> None:
    try:
        os.mkdir(path)
    except FileExistsError:
        pass


class V2Manager:
    mode: Mode = "unified"

    def __init__(self, container_id: str, root: str) -> None:
        self.container_id = container_id
        self.root = root
        self.dir = os.path.join(root, GROUP, container_id)

    # -- layout ---------------------------------------------------------------------------------------

    def paths(self) -> dict[str, str]:
        return {"unified": self.dir}

    def procs_path(self) -> str:
        return os.path.join(self.dir, "cgroup.procs")

    def join_paths(self) -> list[str]:
        return [self.procs_path()]

    def exists(self) -> bool:
        return os.path.isdir(self.dir)

    # -- lifecycle ------------------------------------------------------------------------------------

    @staticmethod
    def _enable(parent: str) -> None:
        """Enable CONTROLLERS for the children of `parent`, those the kernel offers there."""
        available = (read(os.path.join(parent, "cgroup.controllers")) or "").split()
        enabled = (read(os.path.join(parent, "cgroup.subtree_control")) or "").split()
        for c in CONTROLLERS:
            if c in available and c not in enabled:
                path = os.path.join(parent, "cgroup.subtree_control")
                _cg.write(path, f"+{c}")

    def create(self) -> None:
        self._enable(self.root)
        group = os.path.join(self.root, GROUP)
        try:
            _mkdir(group)
            self._enable(group)
            _mkdir(self.dir)
        except OSError as e:
            raise CgroupError(
                f"cannot create cgroup {self.dir}: {e.strerror}",
                hint="devbox must run as root with /sys/fs/cgroup writable",
            ) from e

    def _need(self, controller: str, filename: str) -> str | None:
        """The control file, or None when the controller is not enabled here."""
        p = os.path.join(self.dir, filename)
        return p if os.path.exists(p) else None

    def _require(self, controller: str, filename: str) -> str:
        p = self._need(controller, filename)
        if p is None:
            parent = os.path.join(os.path.dirname(self.dir), "cgroup.subtree_control")
            raise CgroupError(
                f"the {controller} controller is not available in {self.dir} (no {filename})",
                hint=_ENABLE_HINT.format(c=controller, path=parent),
            )
        return p

    def apply(self, resources: Resources) -> None:
        r = resources
        if r.memory is not None:
            _cg.write(self._require("memory", "memory.max"), r.memory)
            if (swap := self._need("memory", "memory.swap.max")) is not None:
                _cg.write(swap, 0)
        else:
            if (p := self._need("memory", "memory.max")) is not None:
                _cg.write(p, "max")
            if (swap := self._need("memory", "memory.swap.max")) is not None:
                _cg.write(swap, "max")

        if r.cpus is not None:
            _cg.write(self._require("cpu", "cpu.max"), f"{cpu_quota(r.cpus)} {CPU_PERIOD_US}")
        elif (p := self._need("cpu", "cpu.max")) is not None:
            _cg.write(p, f"max {CPU_PERIOD_US}")

        if r.cpu_shares is not None:
            _cg.write(self._require("cpu", "cpu.weight"), shares_to_weight(r.cpu_shares))
        elif (p := self._need("cpu", "cpu.weight")) is not None:
            _cg.write(p, 100)

        if r.pids is not None:
            _cg.write(self._require("pids", "pids.max"), r.pids)
        elif (p := self._need("pids", "pids.max")) is not None:
            _cg.write(p, "max")

    def add_pid(self, pid: int) -> None:
        _cg.write(self.procs_path(), pid)

    def pids(self) -> list[int]:
        return read_procs([self.dir]) if os.path.isdir(self.dir) else []

    def freeze(self, timeout: float = 5.0) -> bool:
        p = os.path.join(self.dir, "cgroup.freeze")
        if not os.path.exists(p):
            return False
        _cg.write(p, 1)
        deadline = time.monotonic() + timeout
        while read_keyed(os.path.join(self.dir, "cgroup.events")).get("frozen") != "1":
            if time.monotonic() >= deadline or not os.path.isdir(self.dir):
                return False
            time.sleep(0.002)
        return True

    def thaw(self) -> None:
        p = os.path.join(self.dir, "cgroup.freeze")
        if os.path.exists(p):
            _cg.write(p, 0)

    def kill_all(self, sig: int = signal.SIGKILL, timeout: float = 5.0) -> bool:
        if not self.exists():
            return True
        if not self.pids():
            return True  # empty (the usual case after a run): nothing in it can fork
        deadline = time.monotonic() + timeout
        kill_file = os.path.join(self.dir, "cgroup.kill")
        if sig == signal.SIGKILL and os.path.exists(kill_file):
            # Kernel >= 5.14: SIGKILL to the whole subtree, race-free against forks.
            _cg.write(kill_file, 1)
            if wait_empty(self, deadline):
                return True
        while True:
            # The v2 freezer lets fatal signals through, and frozen processes cannot fork.
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
                    f"processes {left} in {self.dir} survived SIGKILL for {timeout}s",
                    hint="they are probably stuck in the kernel (D state: a hung NFS or FUSE mount); "
                    "see /proc/PID/stack",
                )

    def remove(self, timeout: float = 2.0) -> None:
        rmdir_tree(self.dir, time.monotonic() + timeout)

    def stats(self) -> dict[str, int | None]:
        usage = read_keyed(os.path.join(self.dir, "cpu.stat")).get("usage_usec")
        return {
            "memory_usage": memory_usage(
                read_int(os.path.join(self.dir, "memory.current")),
                read_keyed(os.path.join(self.dir, "memory.stat")).get("inactive_file"),
            ),
            "memory_limit": read_int(os.path.join(self.dir, "memory.max")),
            "pids_current": read_int(os.path.join(self.dir, "pids.current")),
            "pids_limit": read_int(os.path.join(self.dir, "pids.max")),
            "cpu_usage_usec": int(usage) if usage and usage.isdigit() else None,
        }

    def __repr__(self) -> str:
        return f"V2Manager({self.container_id!r}, {os.fspath(self.root)!r})"
