"""The child side of container creation: runs in the forked process that becomes the container.

It imports only the stdlib and devbox.runtime.linux/caps/users, starts no threads, and ends in exec.
The parent (container.py) forks twice:

    devbox ──fork──► A: unshare(mnt uts ipc net pid) ──fork──► B (PID 1)
                     A reports B's host pid and exits at once, so no host process stays per container.

B joins the container's cgroup, unshares its cgroup namespace (rooted there), and follows runc's order: make / private, mount the overlay rootfs, mount /proc, /sys, /dev, the
devbox-provided /etc files and the user's volumes relative to the new root (targets resolved with
openat2(RESOLVE_IN_ROOT), so a hostile symlink in the image never points a mount at the host), then
pivot_root(".", "."), detach the old root, populate /dev, mask and read-only paths, hostname, and
reports "ready". The parent configures the network, sends "go", and B drops privileges and execs.

Protocol on one SOCK_SEQPACKET socketpair (child end inherited by A and B, close-on-exec):
    A -> parent  b"P<pid>"                         B's pid in the host pid namespace
    B -> parent  b"R" (+ pty master fd with -t)     ready for go
    B -> parent  b"E" + json {"kind", "message"}  failure (B exits 125/126/127)
    parent -> B  b"G"                               go: exec
    EOF after go means exec succeeded (the child end is close-on-exec).
"""

from __future__ import annotations

import fcntl
import os
import stat
import sys

from devbox import cjson
from devbox.runtime import caps, users
from devbox.runtime import linux as L

TYPE_CHECKING = False  # typing costs ~4 ms to import; only type checkers need it here
if TYPE_CHECKING:
    from typing import Any

# Everything the child needs must be imported before it forks: after pivot_root the host's Python
# files are out of reach.

NS_FLAGS = L.CLONE_NEWNS | L.CLONE_NEWUTS | L.CLONE_NEWIPC | L.CLONE_NEWCGROUP | L.CLONE_NEWPID

MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]  # fmt: skip
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

MAX_CFG = 4 << 20  # largest configuration message a prestarted PID 1 accepts (env and mounts included)

DEVICES = [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9),
           ("tty", 5, 0)]  # fmt: skip


class InitError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


# ---------------------------------------------------------------- pre-pivot: mounts relative to a root fd


def _resolve_in_root(root_fd: int, path: str, *, make: str | None = None) -> int:
    """O_PATH fd of `path` inside the root; with make="dir"/"file", create what is missing.

    Every lookup uses RESOLVE_IN_ROOT, so symlinks (absolute or `..`) in the image resolve inside the
    container root and never reach the host.
    """
    rel = path.strip("/")
    flags = os.O_PATH
    resolve = L.RESOLVE_IN_ROOT | L.RESOLVE_NO_MAGICLINKS
    try:
        return L.openat2(root_fd, rel or ".", flags, resolve=resolve)
    except FileNotFoundError:
        if make is None:
            raise
    parent_rel, _, name = rel.rpartition("/")
    if parent_rel:
        parent = _resolve_in_root(root_fd, parent_rel, make="dir")
    else:
        parent = os.dup(root_fd)
    try:
        pfd = L.openat2(parent, ".", os.O_PATH | os.O_DIRECTORY, resolve=resolve)
        try:
            # mkdirat/openat need a real (not O_PATH) dirfd for creation on older kernels: reopen it
            dfd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        finally:
            os.close(pfd)
        try:
            if make == "dir":
                try:
                    os.mkdir(name, 0o755, dir_fd=dfd)
                except FileExistsError:
                    pass
            else:
                try:
                    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     0o644, dir_fd=dfd))  # fmt: skip
                except FileExistsError:
                    pass
            return L.openat2(dfd, name, flags, resolve=resolve)
        finally:
            os.close(dfd)
    finally:
        os.close(parent)


def _fdpath(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _mount_at(root_fd: int, target: str, src: str | None, fstype: str | None, flags: int, data: str | None,
              make: str = "dir") -> None:  # fmt: skip
    fd = _resolve_in_root(root_fd, target, make=make)
    try:
        L.mount(src, _fdpath(fd), fstype, flags, data)
    finally:
        os.close(fd)
    if flags & L.MS_BIND and flags & L.MS_RDONLY:
        # a bind ignores MS_RDONLY: remount the new (top) mount read-only
        fd = _resolve_in_root(root_fd, target)
        try:
            L.mount(None, _fdpath(fd), None, L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | L.MS_REC, None)
        finally:
            os.close(fd)


def setup_rootfs(cfg: dict[str, Any]) -> None:
    rootfs = cfg["rootfs"]
    L.mount(None, "/", None, L.MS_REC | L.MS_PRIVATE, None)
    if cfg["lowers"]:
        # relative lowerdirs keep the option string short (a page at most) for images with many layers
        os.chdir(cfg["layers_dir"])
        opts = f"lowerdir={':'.join(cfg['lowers'])},upperdir={cfg['upper']},workdir={cfg['work']}"
        L.mount("overlay", rootfs, "overlay", 0, opts + ",index=off,metacopy=off,redirect_dir=off")
    else:
        L.mount(cfg["upper"], rootfs, None, L.MS_BIND, None)
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        nsd = L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC
        _mount_at(root_fd, "/proc", "proc", "proc", nsd, None)
        _mount_at(root_fd, "/sys", "sysfs", "sysfs", nsd | L.MS_RDONLY, None)
        _mount_at(root_fd, "/dev", "tmpfs", "tmpfs", L.MS_NOSUID | L.MS_STRICTATIME, "mode=755,size=65536k")
        for target, source in cfg["etc_files"].items():
            _mount_at(root_fd, target, source, None, L.MS_BIND, None, make="file")
        for m in cfg["mounts"]:
            if m["kind"] == "tmpfs":
                flags = L.MS_NOSUID | L.MS_NODEV | (L.MS_RDONLY if m["readonly"] else 0)
                _mount_at(root_fd, m["target"], "tmpfs", "tmpfs", flags, "mode=1777")
            else:
                make = "dir" if os.path.isdir(m["source"]) else "file"
                flags = L.MS_BIND | L.MS_REC | (L.MS_RDONLY if m["readonly"] else 0)
                _mount_at(root_fd, m["target"], m["source"], None, flags, None, make=make)
    finally:
        os.close(root_fd)


def pivot(rootfs: str) -> None:
    os.chdir(rootfs)
    L.pivot_root(".", ".")
    L.mount(None, ".", None, L.MS_REC | L.MS_PRIVATE, None)
    L.umount(".", L.MNT_DETACH)
    os.chdir("/")


# ---------------------------------------------------------------- post-pivot: inside the container


def finish_rootfs(cfg: dict[str, Any]) -> None:
    nsd = L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC
    for name, major, minor in DEVICES:
        os.mknod(f"/dev/{name}", 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(f"/dev/{name}", 0o666)
    os.mkdir("/dev/pts", 0o755)
    L.mount("devpts", "/dev/pts", "devpts", L.MS_NOSUID | L.MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5")  # fmt: skip
    os.symlink("pts/ptmx", "/dev/ptmx")
    os.mkdir("/dev/shm", 0o1777)
    L.mount("shm", "/dev/shm", "tmpfs", nsd, "mode=1777,size=65536k")
    os.mkdir("/dev/mqueue", 0o755)
    L.mount("mqueue", "/dev/mqueue", "mqueue", nsd, None)
    for src, dst in (("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
                     ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"),
                     ("/proc/kcore", "/dev/core")):  # fmt: skip
        os.symlink(src, dst)
    _mount_cgroups(cfg.get("cgroup_mounts", []))
    for path in MASKED_PATHS:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            L.mount("tmpfs", path, "tmpfs", L.MS_RDONLY, "size=0")
        else:
            L.mount("/dev/null", path, None, L.MS_BIND, None)
    for path in READONLY_PATHS:
        if not os.path.lexists(path):
            continue
        L.mount(path, path, None, L.MS_BIND | L.MS_REC, None)
        L.mount(None, path, None, L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | L.MS_REC | nsd, None)
    # /dev is complete: make it read-only for its tmpfs layer? devices must stay writable; leave as is.


def _mount_cgroups(mounts: list[dict[str, str]]) -> None:
    if not mounts:
        return
    base = "/sys/fs/cgroup"
    if not os.path.isdir(base):
        return
    ro = L.MS_RDONLY | L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC
    if len(mounts) == 1 and mounts[0]["fstype"] == "cgroup2" and mounts[0]["subdir"] == "":
        L.mount("cgroup", base, "cgroup2", ro, None)
        return
    L.mount("tmpfs", base, "tmpfs", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC, "mode=755")
    for m in mounts:
        d = f"{base}/{m['subdir']}"
        os.makedirs(d, exist_ok=True)
        try:
            L.mount("cgroup", d, m["fstype"], ro, m["options"] or None)
        except OSError:
            os.rmdir(d)
    for link, target in (("cpu", "cpu,cpuacct"), ("cpuacct", "cpu,cpuacct")):
        if os.path.isdir(f"{base}/{target}") and not os.path.exists(f"{base}/{link}"):
            os.symlink(target, f"{base}/{link}")
    L.mount(None, base, None, L.MS_REMOUNT | ro, "mode=755")


def _close_fds(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _report_ready(cfg: dict[str, Any], chan: Any, stdio: tuple[int, int, int]) -> tuple[int, int, int]:
    """Send "ready"; with -t, first open a pty in the container's own devpts, make it the controlling
    terminal (the caller has called setsid) and send its master along. Returns the payload's stdio."""
    if not cfg["tty"]:
        chan.send(b"R")
        return stdio
    master, slave_path = L.open_pty_master("/dev/ptmx")
    slave = os.open(slave_path, os.O_RDWR)
    fcntl.ioctl(slave, L.TIOCSCTTY, 0)
    L.send_fds(chan, b"R", [master])
    os.close(master)
    return (slave, slave, slave)


def _report(chan: Any, kind: str, message: str) -> None:
    try:
        chan.send(b"E" + cjson.dumps({"kind": kind, "message": message}).encode())
    except OSError:
        pass


def join_cgroup(cfg: dict[str, Any]) -> None:
    """Move this process (PID 1, still in the host's mounts) into the container's cgroup, then give it
    its own cgroup namespace rooted there, so /proc/self/cgroup reads "/" inside the container."""
    for procs in cfg["cgroup_procs"]:
        with open(procs, "w") as f:
            f.write("0")  # 0: the writing process, whatever pid namespace it is in
    L.unshare(L.CLONE_NEWCGROUP)


def child_b(cfg: dict[str, Any], chan: Any, stdio: tuple[int, int, int]) -> None:
    """PID 1 of the container. Never returns."""
    code = 125
    try:
        join_cgroup(cfg)
        if cfg.get("prestarted"):  # forked early (container.prestart): the rest of cfg comes now
            msg = chan.recv(MAX_CFG)
            if msg[:1] != b"C":
                os._exit(125)  # the start was abandoned (EOF): nothing was set up yet
            cfg = cjson.loads(msg[1:])
        os.setsid()
        setup_rootfs(cfg)
        pivot(cfg["rootfs"])
        finish_rootfs(cfg)
        if cfg["hostname"]:
            L.sethostname(cfg["hostname"])
        stdio = _report_ready(cfg, chan, stdio)
        if chan.recv(1) != b"G":
            os._exit(125)
        exec_payload(cfg, stdio, keep={chan.fileno()}, chan=chan)
    except InitError as e:
        _report(chan, e.kind, e.message)
        code = {"notfound": 127, "noexec": 126}.get(e.kind, 125)
    except OSError as e:
        _report(chan, "oserror", str(e))
    except BaseException as e:  # noqa: BLE001 - must never return into the parent's code
        _report(chan, "internal", f"{type(e).__name__}: {e}")
    os._exit(code)


def exec_payload(cfg: dict[str, Any], stdio: tuple[int, int, int], keep: set[int],
                 chan: Any = None) -> None:  # fmt: skip
    """Shared by run and exec: stdio, working dir, user, capabilities, no_new_privs, exec."""
    for target, fd in enumerate(stdio):
        if fd != target:
            os.dup2(fd, target, inheritable=True)
        else:
            os.set_inheritable(fd, True)
    root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        user = users.resolve_user(root_fd, cfg.get("user"))
    except Exception as e:  # ConfigError from users
        raise InitError("user", getattr(e, "message", str(e))) from None
    finally:
        os.close(root_fd)
    env = _environment(cfg["env"], user, cfg)
    cwd = cfg.get("cwd") or "/"
    try:
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)
    except OSError as e:
        raise InitError("cwd", f"cannot use working directory {cwd!r} in the container: {e.strerror}") from None
    keep_fds = set(keep)
    _close_fds(keep_fds)
    caps.drop_privileges(cfg["caps"], user)
    L.set_no_new_privs()
    args = cfg["args"]
    if not args:
        raise InitError("notfound", "no command given and the image has no Cmd or Entrypoint")
    try:
        _execvpe(args[0], args, env)
    except FileNotFoundError:
        raise InitError("notfound", f"executable file {args[0]!r} not found in the container's $PATH") from None
    except PermissionError:
        raise InitError("noexec", f"{args[0]!r} is not executable in the container (permission denied)") from None
    except OSError as e:
        raise InitError("noexec", f"cannot execute {args[0]!r} in the container: {e.strerror}") from None


def _execvpe(file: str, args: list[str], env: dict[str, str]) -> None:
    """os.execvpe, step for step, without its os.get_exec_path(), which imports `warnings`: this runs
    after pivot_root, where the host's standard library is out of reach, so it must import nothing
    (a module some earlier import happened to load is no guarantee)."""
    if os.path.dirname(file):
        os.execve(file, args, env)
    saved: OSError | None = None
    last: OSError | None = None
    for d in env.get("PATH", os.defpath).split(os.pathsep):
        try:
            os.execve(os.path.join(d, file), args, env)
        except (FileNotFoundError, NotADirectoryError) as e:
            last = e
        except OSError as e:
            last = e
            saved = saved or e
    raise saved or last or FileNotFoundError(file)


def _environment(env_list: list[str], user: Any, cfg: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in env_list:
        k, _, v = item.partition("=")
        env[k] = v
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env.setdefault("HOSTNAME", cfg.get("hostname") or "")
    env.setdefault("HOME", user.home or "/")
    if cfg.get("tty"):
        env.setdefault("TERM", "xterm")
    return env


def child_a(cfg: dict[str, Any], chan: Any, stdio: tuple[int, int, int]) -> None:
    """Intermediate child: unshare, fork PID 1, report its pid, exit. Never returns.

    The cgroup is joined by PID 1 itself (join_cgroup), not here: a cgroup migration waits for an RCU
    grace period (~15 ms on these machines), and the parent plumbs the network while PID 1 waits."""
    try:
        flags = (NS_FLAGS & ~L.CLONE_NEWCGROUP) | (0 if cfg["network"] == "host" else L.CLONE_NEWNET)
        L.unshare(flags)
        pid = os.fork()
        if pid == 0:
            child_b(cfg, chan, stdio)
        chan.send(b"P%d" % pid)
        os._exit(0)
    except BaseException as e:  # noqa: BLE001
        _report(chan, "oserror", f"cannot create the container's namespaces: {e}")
        os._exit(125)


def enter_and_exec(cfg: dict[str, Any], chan: Any, stdio: tuple[int, int, int]) -> None:
    """`devbox exec`: join a running container's cgroup and namespaces, fork into its pid namespace,
    exec there. The joining process (C) waits for the payload (D) and exits with its status. Never returns."""
    try:
        for procs in cfg["cgroup_procs"]:
            try:
                with open(procs, "w") as f:
                    f.write(str(os.getpid()))
            except OSError:
                pass
        pid = cfg["target_pid"]
        fds = []
        for ns in ("cgroup", "ipc", "uts", "net", "pid", "mnt"):
            if ns == "net" and cfg["network"] == "host":
                continue
            fds.append(os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC))
        for fd in fds:
            L.setns(fd, 0)
            os.close(fd)
        child = os.fork()
        if child == 0:
            try:
                os.setsid()
                stdio = _report_ready(cfg, chan, stdio)
                exec_payload(cfg, stdio, keep={chan.fileno()})
            except InitError as e:
                _report(chan, e.kind, e.message)
                os._exit({"notfound": 127, "noexec": 126}.get(e.kind, 125))
            except BaseException as e:  # noqa: BLE001
                _report(chan, "oserror", str(e))
                os._exit(125)
        chan.send(b"P%d" % child)
        chan.close()
        for fd in set(stdio):
            if fd > 2:
                os.close(fd)
        _, status = os.waitpid(child, 0)
        os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
    except BaseException as e:  # noqa: BLE001
        _report(chan, "oserror", f"cannot enter the container: {e}")
        os._exit(125)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("nsinit is not a command; it runs inside devbox's forked children")
