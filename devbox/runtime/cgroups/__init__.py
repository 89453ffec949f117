"""cgroups: one cgroup per container, `devbox/<container_id>` under every hierarchy.

Modes (detected by statfs magic, as youki's libcgroups `get_cgroup_setup_with_root` does):
  unified  /sys/fs/cgroup is cgroup2: one tree, controllers enabled through cgroup.subtree_control (v2.py).
  hybrid   /sys/fs/cgroup is a tmpfs with v1 controller mounts plus a cgroup2 at unified/: limits are
           set in the v1 hierarchies; the process is also placed in unified/devbox/<id> so tools that
           read the cgroup2 tree (systemd) see it where it belongs (v1.py).
  legacy   only v1 hierarchies (v1.py, without unified/).

The root is a parameter so unit tests point it at a fake tree under tmp_path (with `mode` given,
since a fake tree is not a cgroup filesystem).

Everything here is kernel files: every write that fails becomes a CgroupError naming the file and the
value, with a hint. Processes are only ever found by reading cgroup.procs, never by name.
"""

from __future__ import annotations

import _signal as signal  # the C module: signal.py's enums cost ~1 ms to import
import errno
import os
import time

from devbox.errors import CgroupError
from devbox.runtime import linux
from devbox.runtime.resources import Resources
from devbox.textmatch import is_name

TYPE_CHECKING = False  # typing costs ~4 ms to import; only type checkers need it here
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Literal, Protocol

    from devbox.paths import StrPath

    Mode = Literal["unified", "hybrid", "legacy"]
else:  # at run time Manager is a plain documented interface
    Protocol = object
    Mode = str
ROOT = "/sys/fs/cgroup"
GROUP = "devbox"  # every container's cgroup is GROUP/<id> under each hierarchy

_ID_MAX = 128  # container ids: [A-Za-z0-9][A-Za-z0-9_.-]{0,127}


def _is_id(s: str) -> bool:
    return is_name(s, _ID_MAX)


def detect(root: str | os.PathLike[str] = ROOT, statfs: Callable[[str], int] = linux.statfs_type) -> Mode:
    """Which cgroup setup is mounted at `root` ("unified", "hybrid" or "legacy")."""
    root = os.fspath(root)
    try:
        magic = statfs(root)
    except OSError as e:
        raise CgroupError(f"cannot statfs {root}: {e.strerror}", hint="is /sys mounted?") from e
    if magic == linux.CGROUP2_SUPER_MAGIC:
        return "unified"
    if magic == linux.TMPFS_MAGIC:
        unified = os.path.join(root, "unified")
        try:
            if os.path.isdir(unified) and statfs(unified) == linux.CGROUP2_SUPER_MAGIC:
                return "hybrid"
        except OSError:
            pass
        return "legacy"
    raise CgroupError(
        f"{root} is not a cgroup filesystem (statfs magic {magic:#x})",
        hint="mount cgroup2 there (mount -t cgroup2 none /sys/fs/cgroup) or the v1 hierarchies on a tmpfs",
    )


class Manager(Protocol):
    """The cgroup of one container, across every hierarchy of the machine's setup."""

    container_id: str
    mode: Mode

    def create(self) -> None:
        """Make the cgroup directories (idempotent); on v2 enable the controllers first."""

    def apply(self, resources: Resources) -> None:
        """Write every limit; a None field resets that limit to unlimited / the kernel default."""

    def add_pid(self, pid: int) -> None:
        """Move `pid` (0 = the calling process) into the cgroup in every hierarchy."""

    def pids(self) -> list[int]:
        """Every pid in the cgroup and its descendants, sorted."""

    def freeze(self, timeout: float = 5.0) -> bool:
        """Freeze every process; True once the kernel reports the cgroup frozen."""

    def thaw(self) -> None: ...

    def kill_all(self, sig: int = signal.SIGKILL, timeout: float = 5.0) -> bool:
        """Signal every process of the cgroup (frozen while signalled, so nothing forks away).

        With SIGKILL, repeat until the cgroup is empty; still populated at the deadline raises
        CgroupError. With another signal, deliver it once, then wait up to `timeout` for the cgroup
        to empty. Returns True when the cgroup is empty at the end."""

    def remove(self, timeout: float = 2.0) -> None:
        """rmdir the cgroup (and any sub-cgroups) in every hierarchy; missing dirs are fine; EBUSY is
        retried until `timeout`, then CgroupError."""

    def exists(self) -> bool: ...

    def stats(self) -> dict[str, int | None]:
        """memory_usage (bytes, without inactive page cache, as docker stats), memory_limit (bytes),
        pids_current, pids_limit, cpu_usage_usec (cumulative); None if unknown or unlimited."""

    def paths(self) -> dict[str, str]:
        """Controller/hierarchy name -> this container's cgroup directory."""

    def procs_path(self) -> str:
        """The main cgroup.procs (the one limits and stats refer to)."""

    def join_paths(self) -> list[str]:
        """Every cgroup.procs file a new process of this container must be written into."""


def check_id(container_id: str) -> str:
    if not _is_id(container_id):
        raise ValueError(f"invalid container id for a cgroup name: {container_id!r}")
    return container_id


def manager_for(container_id: str, root: str | os.PathLike[str] = ROOT, mode: Mode | None = None) -> Manager:
    """The Manager for `container_id` under `root`; `mode` defaults to detect(root)."""
    check_id(container_id)
    mode = mode or detect(root)
    if mode == "unified":
        from devbox.runtime.cgroups.v2 import V2Manager

        return V2Manager(container_id, os.fspath(root))
    from devbox.runtime.cgroups.v1 import V1Manager

    return V1Manager(container_id, os.fspath(root), hybrid=(mode == "hybrid"))


def group_dirs(root: str | os.PathLike[str] = ROOT, mode: Mode | None = None) -> list[str]:
    """Every `devbox/` parent directory of the setup at `root` (existing or not)."""
    mode = mode or detect(root)
    if mode == "unified":
        return [os.path.join(root, GROUP)]
    from devbox.runtime.cgroups.v1 import hierarchy_dirs

    return [os.path.join(d, GROUP) for d in hierarchy_dirs(os.fspath(root), hybrid=(mode == "hybrid")).values()]


def list_containers(root: str | os.PathLike[str] = ROOT, mode: Mode | None = None) -> list[str]:
    """Ids of containers that have a cgroup directory in any hierarchy (to reconcile after a crash)."""
    ids: set[str] = set()
    for d in group_dirs(root, mode):
        try:
            with os.scandir(d) as it:
                ids.update(e.name for e in it if e.is_dir(follow_symlinks=False) and _is_id(e.name))
        except FileNotFoundError:
            continue
    return sorted(ids)


# ---- file helpers shared by v1 and v2 ------------------------------------------------------------------

_WRITE_HINTS = {
    errno.ENOENT: "the controller is not enabled for this cgroup (or the cgroup is gone)",
    errno.EACCES: "devbox must run as root to manage cgroups",
    errno.EPERM: "devbox must run as root with CAP_SYS_ADMIN in the host's cgroup namespace",
    errno.EBUSY: "a cgroup with processes in it cannot enable controllers for its children "
    "(the 'no internal processes' rule); run devbox from a cgroup that delegates to children",
    errno.EINVAL: "the kernel rejected the value: out of range, or below what the cgroup already uses",
    errno.ESRCH: "the process has exited",
    errno.EROFS: "/sys/fs/cgroup is mounted read-only (inside a container?)",
}


def write(path: StrPath, value: str | int, hint: str | None = None) -> None:
    """Write `value` to a cgroup file in one write(2), as the kernel expects (v1.py and v2.py call it
    as `cgroups.write` so unit tests can record every write)."""
    data = str(value).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as e:
        raise CgroupError(
            f"cannot write '{value}' to {path}: {e.strerror}",
            hint=hint
            or _WRITE_HINTS.get(e.errno or 0, "check the cgroup setup with `cat /proc/self/cgroup`"),
        ) from e


def read(path: StrPath) -> str | None:
    """Contents of a cgroup file, stripped; None if it does not exist."""
    try:
        with open(path) as f:
            return f.read().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as e:
        if e.errno in (errno.ENODEV, errno.ENOTSUP):
            return None
        raise CgroupError(f"cannot read {path}: {e.strerror}") from e


def read_int(path: StrPath) -> int | None:
    raw = read(path)
    if raw is None or raw == "max":
        return None
    try:
        return int(raw.split()[0])
    except (ValueError, IndexError):
        return None


def read_keyed(path: StrPath) -> dict[str, str]:
    """A 'key value' per line file (cpu.stat, cgroup.events, memory.stat)."""
    raw = read(path) or ""
    out = {}
    for line in raw.splitlines():
        k, _, v = line.partition(" ")
        out[k] = v.strip()
    return out


def read_procs(dirs: Iterable[StrPath]) -> list[int]:
    """Union of cgroup.procs of each dir and of every sub-cgroup below it."""
    pids: set[int] = set()
    for d in dirs:
        for sub, _, _ in os.walk(d):
            raw = read(os.path.join(sub, "cgroup.procs"))
            if raw:
                pids.update(int(p) for p in raw.split())
    return sorted(pids)


def signal_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def rmdir_tree(path: StrPath, deadline: float) -> None:
    """rmdir `path` and its sub-cgroups (children first). Missing is fine; EBUSY is retried until
    `deadline` (the kernel releases a cgroup shortly after its last process is reaped)."""
    if not os.path.isdir(path):
        return
    subdirs = [dp for dp, _, _ in os.walk(path, topdown=False)]
    for d in subdirs:
        delay = 0.005
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno == errno.EBUSY and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 0.1)
                    continue
                hint = (
                    "processes are still in it: kill them first (devbox rm -f)"
                    if e.errno == errno.EBUSY
                    else _WRITE_HINTS.get(e.errno or 0)
                )
                raise CgroupError(f"cannot remove cgroup {d}: {e.strerror}", hint=hint) from e


def wait_empty(manager: Manager, deadline: float) -> bool:
    delay = 0.002
    while True:
        if not manager.pids():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def memory_usage(usage: int | None, inactive_file: str | None) -> int | None:
    """Memory in use as `docker stats` shows it: the cgroup's usage minus its inactive page cache
    (which the kernel drops first under pressure)."""
    if usage is None:
        return None
    try:
        return max(0, usage - int(inactive_file or 0))
    except ValueError:
        return usage


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares [2, 262144] -> v2 cpu.weight [1, 10000] (the formula runc and systemd use)."""
    shares = max(2, min(262144, shares))
    return 1 + ((shares - 2) * 9999) // 262142


CPU_PERIOD_US = 100000


def cpu_quota(cpus: float) -> int:
    """CFS quota in microseconds per CPU_PERIOD_US for `cpus` CPUs (at least the kernel's 1 ms)."""
    return max(1000, round(cpus * CPU_PERIOD_US))


__all__ = [
    "GROUP",
    "ROOT",
    "Manager",
    "Mode",
    "detect",
    "group_dirs",
    "list_containers",
    "manager_for",
    "shares_to_weight",
]
