"""Container lifecycle: create, start, exec, stop, kill, remove, list, reconcile.

State lives in paths.containers_dir()/<id>/ (spec.json, state.json, upper/, work/, rootfs/, etc/, log).
Status is read from the kernel: the recorded pid must be alive, not a zombie, and have the recorded
start time on the same boot. state.json only records what was done (runc's refreshState).

No host-side process stays per container: the double fork in nsinit hands PID 1 to the host's init
(detached) or to the devbox process itself, made a child subreaper (foreground run).
"""

from __future__ import annotations

import _signal as signal  # the C module: signal.py's enums cost ~1 ms to import
import os
import time

from devbox import cjson, errors, fsutil, paths
from devbox.record import field, record
from devbox.runtime import linux as L
from devbox.runtime import nsinit
from devbox.runtime.spec import ContainerSpec

TYPE_CHECKING = False  # typing costs ~4 ms to import; only type checkers need it here
if TYPE_CHECKING:
    import contextlib
    from typing import Any

CREATING, CREATED, RUNNING, STOPPED = "creating", "created", "running", "stopped"

_ADJ = ["brisk", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry", "nimble",
        "proud", "quiet", "rapid", "sunny", "tidy", "vivid", "witty", "zesty", "bold"]  # fmt: skip
_NOUN = ["otter", "heron", "lynx", "finch", "panda", "koala", "bison", "gecko", "ibis", "llama", "moose",
         "newt", "orca", "puffin", "quail", "raven", "seal", "tapir", "wombat", "yak"]  # fmt: skip


@record
class Container:
    id: str
    dir: str  # plain str paths on the run path (paths.py says why)
    spec: ContainerSpec
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self.state.get("pid")

    @property
    def status(self) -> str:
        return self.state.get("status", CREATED)

    @property
    def log_path(self) -> str:
        return os.path.join(self.dir, "log")

    @property
    def upper(self) -> str:
        return os.path.join(self.dir, "upper")

    def is_running(self) -> bool:
        return self.refresh() == RUNNING

    def refresh(self) -> str:
        """Recompute status from the kernel; never trust state.json alone."""
        st = self.state
        if st.get("status") == CREATING:
            owner, start = st.get("owner_pid"), st.get("owner_start")
            if owner and L.proc_start_time(owner) == start and st.get("boot_id") == fsutil.boot_id():
                return CREATING
            st["status"] = "broken"
            return "broken"
        if st.get("status") == RUNNING:
            if not (st.get("boot_id") == fsutil.boot_id() and st.get("pid")
                    and L.proc_start_time(st["pid"]) == st.get("pid_start")):  # fmt: skip
                st["status"] = STOPPED
                st.setdefault("finished_at", time.time())
        return st.get("status", CREATED)

    def save_state(self) -> None:
        fsutil.write_json(os.path.join(self.dir, "state.json"), self.state)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        return fsutil.locked(os.path.join(paths.locks_dir(), f"container-{self.id}.lock"))


def _lock_all() -> contextlib.AbstractContextManager[None]:
    return fsutil.locked(os.path.join(paths.locks_dir(), "containers.lock"))


def _load(d: str) -> Container | None:
    try:
        spec = ContainerSpec.from_dict(fsutil.read_json(os.path.join(d, "spec.json")))
    except (FileNotFoundError, ValueError, TypeError):
        return None
    try:
        state = fsutil.read_json(os.path.join(d, "state.json"))
    except (FileNotFoundError, ValueError):
        state = {"status": "broken"}
    c = Container(os.path.basename(d), d, spec, state)
    c.refresh()
    return c


def list_containers() -> list[Container]:
    try:
        with os.scandir(paths.containers_dir()) as it:
            dirs = sorted(e.path for e in it if e.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = [c for d in dirs if (c := _load(d)) is not None]
    out.sort(key=lambda c: c.state.get("created_at", 0))
    return out


def find(name_or_id: str) -> Container:
    cs = list_containers()
    for c in cs:
        if c.name == name_or_id or c.id == name_or_id:
            return c
    matches = [c for c in cs if c.id.startswith(name_or_id)] if len(name_or_id) >= 3 else []
    if len(matches) == 1:
        return matches[0]
    raise errors.ContainerNotFound(f"no such container: {name_or_id}", hint="see `devbox ps -a`")


def new_id() -> str:
    return os.urandom(32).hex()


def _random_name(taken: set[str]) -> str:
    for _ in range(100):
        r = int.from_bytes(os.urandom(4), "little")
        n = f"{_ADJ[r % len(_ADJ)]}_{_NOUN[(r >> 16) % len(_NOUN)]}"
        if n not in taken:
            return n
    return f"box_{os.urandom(4).hex()}"


def create(spec_fields: dict[str, Any]) -> Container:
    """Register a new container (status `created`); `start` runs it."""
    cid = spec_fields.get("id") or new_id()
    with _lock_all():
        existing = list_containers()
        names = {c.name for c in existing}
        name = spec_fields.get("name") or _random_name(names)
        if name in names:
            raise errors.AlreadyExists(f"a container named {name!r} already exists",
                                       hint=f"remove it with `devbox rm -f {name}` or pick another --name")  # fmt: skip
        spec = ContainerSpec(**{**spec_fields, "id": cid, "name": name,
                                "hostname": spec_fields.get("hostname") or cid[:12]})  # fmt: skip
        d = os.path.join(paths.containers_dir(), cid)
        tmp = os.path.join(paths.containers_dir(), f".{cid}.tmp")
        os.makedirs(paths.containers_dir(), exist_ok=True)
        os.mkdir(tmp)
        try:
            for sub in ("upper", "work", "rootfs", "etc"):
                os.mkdir(os.path.join(tmp, sub), 0o755)
            fsutil.write_json(os.path.join(tmp, "spec.json"), spec.to_dict())
            fsutil.write_json(os.path.join(tmp, "state.json"), {"status": CREATED, "created_at": time.time()})
            os.rename(tmp, d)
        except BaseException:
            fsutil.rmtree(tmp)
            raise
    return Container(cid, d, spec, fsutil.read_json(os.path.join(d, "state.json")))


# --------------------------------------------------------------------------------------------- start


@record
class Started:
    """A started payload in the foreground: wait on `wait_pid`, signal `signal_pid`."""

    container: Container
    wait_pid: int
    signal_pid: int
    master: int | None
    relays: list[tuple[int, int]]


def _cgroup_mounts() -> list[dict[str, str]]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fields = pre.split()
            mnt = fields[4]
            fstype, _src, superopts = (post.split() + ["", "", ""])[:3]
            if fstype not in ("cgroup", "cgroup2") or not (mnt == "/sys/fs/cgroup"
                                                            or mnt.startswith("/sys/fs/cgroup/")):  # fmt: skip
                continue
            opts = ",".join(o for o in superopts.split(",") if o not in ("rw", "ro"))
            out.append({"fstype": fstype, "options": opts if fstype == "cgroup" else "",
                        "subdir": mnt[len("/sys/fs/cgroup/"):] if mnt != "/sys/fs/cgroup" else ""})  # fmt: skip
    return out


def _write_etc_files(c: Container) -> dict[str, str]:
    etc = os.path.join(c.dir, "etc")
    files = {f"/etc/{n}": os.path.join(etc, n) for n in ("hostname", "hosts", "resolv.conf")}

    def write(name: str, text: str) -> None:
        with open(files[name], "w") as f:
            f.write(text)

    write("/etc/hostname", c.spec.hostname + "\n")
    if not os.path.exists(files["/etc/hosts"]) or c.spec.network in ("none", "host"):
        names = " ".join(dict.fromkeys([c.spec.hostname, c.name, *c.spec.aliases]))
        hosts = f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{names}\n"
        if c.spec.network == "host":
            with open("/etc/hosts") as f:
                hosts = f.read()
        write("/etc/hosts", hosts)
    if c.spec.network == "host":
        with open("/etc/resolv.conf") as f:
            write("/etc/resolv.conf", f.read())
    elif c.spec.network == "none":
        write("/etc/resolv.conf", "")
    else:
        from devbox.runtime import network

        write("/etc/resolv.conf", network.resolv_conf())
    return files


class Prestarted:
    """PID 1 of a foreground container, forked before the container exists (see prestart)."""

    def __init__(self, cid: str, cg: Any, sock: Any, lock_fd: int, a_pid: int) -> None:
        self.id = cid
        self.a_pid = a_pid  # the intermediate child: exits once it has sent PID 1's pid
        self.cg = cg
        self.sock: Any = sock
        self.chan = _StartChannel(sock)
        self._lock_fd: int | None = lock_fd

    def reap(self) -> None:
        """Reap the intermediate child (it exits right after sending PID 1's pid)."""
        if self.a_pid:
            try:
                os.waitpid(self.a_pid, 0)
            except ChildProcessError:
                pass
            self.a_pid = 0

    def release(self) -> None:
        """The start is complete (or undone): the cgroup no longer needs the prestart lock."""
        self.reap()
        if self._lock_fd is not None:
            try:
                os.unlink(_prestart_lock_path(self.id))
            except FileNotFoundError:
                pass
            os.close(self._lock_fd)
            self._lock_fd = None

    def abort(self) -> None:
        """Undo prestart: PID 1 is killed (it has set nothing up: it waits for its configuration),
        the cgroup removed. Idempotent; does nothing to PID 1 once start() has taken the channel over
        (its cleanup owns PID 1 then, and may have reaped it already)."""
        if self.sock is not None:
            pid = None
            try:
                pid = self.chan.pid()
            except Exception:
                pass
            self.reap()
            self.sock.close()
            self.sock = None
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
            try:
                self.cg.remove()
            except Exception:
                pass
            _remove_empty_cgroup_parents()
        self.release()


def _prestart_lock_path(cid: str) -> str:
    return os.path.join(paths.locks_dir(), f"prestart-{cid}.lock")


def prestart(cid: str, network: str, stdio: tuple[int, int, int]) -> Prestarted:
    """Fork the PID 1 of a foreground `run` before its container exists.

    Joining a cgroup waits for an RCU grace period in the kernel (10-30 ms on these machines); done
    first, it overlaps the image lookup, the state files and the network plumbing instead of
    following them. PID 1 joins the cgroup, then waits for its configuration, which start() sends
    (start(..., prestarted=handle)). Until then the cgroup is guarded by a held lock file, so a
    concurrent reconcile never takes it for a leftover."""
    import fcntl

    from devbox.runtime import cgroups

    lock_path = _prestart_lock_path(cid)
    os.makedirs(paths.locks_dir(), exist_ok=True)
    lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    cg = cgroups.manager_for(cid)
    try:
        with _lock_all():
            cg.create()
        cfg = {"network": network, "cgroup_procs": [os.fspath(p) for p in cg.join_paths()], "prestarted": True}
        # A is not waited for here: its unshare (a new netns costs ~1-2 ms) runs while devbox goes on;
        # start() (or abort()) reaps it after reading the pid it sends.
        parent_sock, a = _fork_init(cfg, stdio, subreaper=True)
    except BaseException:
        try:
            cg.remove()
        except Exception:
            pass
        try:
            os.unlink(lock_path)
        except FileNotFoundError:
            pass
        os.close(lock_fd)
        raise
    return Prestarted(cid, cg, parent_sock, lock_fd, a)


def _fork_init(cfg: dict[str, Any], stdio: tuple[int, int, int], subreaper: bool) -> tuple[Any, int]:
    """Fork A (nsinit.child_a), which unshares and forks the container's PID 1. Returns devbox's end
    of the start channel and A's pid. subreaper: PID 1 becomes devbox's child (foreground runs)."""
    parent_sock, child_sock = L.seqpacket_pair()
    try:
        if subreaper:
            L.set_child_subreaper()
        a = os.fork()
        if a == 0:
            parent_sock.close()
            nsinit.child_a(cfg, child_sock, stdio)  # never returns
    except BaseException:
        parent_sock.close()
        raise
    finally:
        child_sock.close()
    return parent_sock, a


def _prestarting(cid: str) -> bool:
    """Whether another devbox holds `cid`'s prestart lock (its PID 1 may not have joined yet)."""
    import fcntl

    try:
        fd = os.open(_prestart_lock_path(cid), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    try:  # a leftover of a killed devbox
        os.unlink(_prestart_lock_path(cid))
    except FileNotFoundError:
        pass
    return False


def start(c: Container, *, foreground: bool = False, stdio: tuple[int, int, int] | None = None,
          relays: list[tuple[int, int]] | None = None, prestarted: Prestarted | None = None) -> Started | None:  # fmt: skip
    """Start a created or stopped container. Foreground: returns a Started handle to wait on.
    `prestarted`: PID 1 from prestart(c.id, ...), which was given `stdio` already (foreground only)."""
    if prestarted is not None:
        try:
            return _start(c, foreground=foreground, stdio=stdio, relays=relays, pre=prestarted)
        except BaseException:
            # Before _start took the channel over (a check failed first), PID 1 is still waiting for
            # its configuration: kill it and drop the cgroup. After, _start's own cleanup did that.
            prestarted.abort()
            raise
        finally:
            prestarted.release()
    return _start(c, foreground=foreground, stdio=stdio, relays=relays, pre=None)


def _start(c: Container, *, foreground: bool, stdio: tuple[int, int, int] | None,
           relays: list[tuple[int, int]] | None, pre: Prestarted | None) -> Started | None:  # fmt: skip
    from devbox.runtime import cgroups
    from devbox.runtime.caps import DEFAULT_CAPS, mask
    from devbox.runtime.image.store import ImageStore
    from devbox.runtime.resources import Resources

    with c.lock():
        status = c.refresh()
        if status in (RUNNING, CREATING):
            raise errors.IncorrectStatus(f"container {c.name} is already {status}")
        if not os.path.ismount("/proc") or not _have_overlay():
            raise errors.KernelError("this kernel has no overlayfs", hint="load it with `modprobe overlay`")
        store = ImageStore()
        layers = [store.layer_dir(d) for d in c.spec.diff_ids]
        for p in layers:
            if not os.path.isdir(p):
                raise errors.ImageError(f"layer {os.path.basename(p)[:12]} of image {c.spec.image} is missing",
                                        hint=f"pull or import {c.spec.image} again")  # fmt: skip
        me_start = L.proc_start_time(os.getpid())
        c.state.update({"status": CREATING, "owner_pid": os.getpid(), "owner_start": me_start,
                        "boot_id": fsutil.boot_id(), "pid": None, "exit_code": None,
                        "needs_teardown": True})  # fmt: skip
        c.save_state()
        cg = pre.cg if pre is not None else cgroups.manager_for(c.id)
        parent_sock = None
        pid = None
        log_fd = None
        try:
            if pre is None:
                with _lock_all():  # remove() may be deleting the empty devbox/ parents right now
                    cg.create()
            cg.apply(Resources.from_dict(c.spec.resources))
            etc_files = _write_etc_files(c)
            keep = mask(DEFAULT_CAPS) | mask(c.spec.caps_add)
            keep &= ~mask(c.spec.caps_drop)
            cfg = {
                "rootfs": os.path.join(c.dir, "rootfs"),
                "layers_dir": paths.layers_dir(),
                "lowers": [os.path.basename(p) for p in reversed(layers)],
                "upper": os.path.join(c.dir, "upper"),
                "work": os.path.join(c.dir, "work"),
                "etc_files": etc_files,
                "mounts": [m.__dict__ for m in c.spec.mounts],
                "network": c.spec.network,
                "hostname": c.spec.hostname,
                "tty": c.spec.tty,
                "args": c.spec.args,
                "env": c.spec.env,
                "cwd": c.spec.cwd,
                "user": c.spec.user,
                "caps": keep,
                "cgroup_procs": [os.fspath(p) for p in cg.join_paths()],
                "cgroup_mounts": _cgroup_mounts(),
            }
            if not foreground:
                log_fd = os.open(c.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
                null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                stdio = (null, log_fd, log_fd)
            assert stdio is not None
            if pre is not None:
                if not foreground:
                    raise ValueError("a prestarted container runs in the foreground")
                parent_sock, chan = pre.sock, pre.chan
                assert parent_sock is not None
                pre.sock = None  # taken over: from here on this function's cleanup owns PID 1
                try:
                    parent_sock.send(b"C" + cjson.dumps(cfg).encode())
                except OSError as e:  # EMSGSIZE: an environment of megabytes; EPIPE: PID 1 died
                    if chan.pid() is None:
                        raise errors.KernelError("the container's init exited before it was ready",
                                                 hint="run with --debug and check `dmesg`") from None  # fmt: skip
                    raise errors.ConfigError(f"cannot hand the container its configuration: {e.strerror}",
                                             hint="pass less environment (-e) or fewer mounts") from None  # fmt: skip
            else:
                parent_sock, a = _fork_init(cfg, stdio, subreaper=foreground)
                os.waitpid(a, 0)  # A exits as soon as it has forked PID 1
                chan = _StartChannel(parent_sock)
            # PID 1 joins its cgroup, which waits out an RCU grace period in the kernel (10-30 ms
            # here), then builds its root. Its netns exists already: the network is plumbed meanwhile.
            pid = chan.pid()
            if pre is not None:
                pre.reap()
            if pid is None:
                raise errors.KernelError("the container's init exited before it was ready",
                                         hint="run with --debug and check `dmesg`")  # fmt: skip
            c.state.update({"pid": pid, "pid_start": L.proc_start_time(pid)})
            c.save_state()
            _fault("start:after-init")
            rules_pending = False
            if c.spec.network not in ("none", "host"):
                from devbox.runtime import network
                from devbox.runtime.ports import parse_port

                att = network.attach(c.id, pid, c.spec.network, c.name, [c.spec.hostname, *c.spec.aliases],
                                     [parse_port(p) for p in c.spec.ports], defer_rules=True)  # fmt: skip
                c.state["ip"] = att.ip
                rules_pending = att.rules_pending
            if not chan.ready():
                raise errors.KernelError("the container's init exited before it was ready",
                                         hint="run with --debug and check `dmesg`")  # fmt: skip
            master = chan.master
            parent_sock.send(b"G")
            if rules_pending:  # published ports: the table is written while the payload execs
                network.apply_rules()
            msg = parent_sock.recv(65536)
            if msg:
                _raise_child_error(msg)
            c.state.update({"status": RUNNING, "started_at": time.time(), "owner_pid": None})
            c.state.pop("finished_at", None)
            c.save_state()
        except BaseException:
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                if foreground:
                    try:
                        os.waitpid(pid, 0)
                    except ChildProcessError:
                        pass
            _teardown(c, cg)
            c.state.update({"status": STOPPED if c.state.get("started_at") else CREATED, "pid": None,
                            "owner_pid": None})  # fmt: skip
            c.save_state()
            raise
        finally:
            if parent_sock is not None:
                parent_sock.close()
            if log_fd is not None:
                os.close(log_fd)
                os.close(stdio[0])
    if foreground:
        assert pid is not None
        return Started(c, pid, pid, master, relays or [])
    return None


class _StartChannel:
    """The parent's end of the start protocol: "P<pid>" (from A) and "R" (+ pty master, from PID 1)
    arrive in either order; "E" is raised as the matching DevboxError; EOF means the child is gone."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self._pid: int | None = None
        self._ready = False
        self._eof = False
        self.master: int | None = None

    def _next(self) -> None:
        msg, fds = L.recv_fds(self.sock, 65536, 1)
        if not msg:
            self._eof = True
        elif msg[:1] == b"P":
            self._pid = int(msg[1:])
        elif msg[:1] == b"R":
            self._ready = True
            self.master = fds[0] if fds else None
        else:
            _raise_child_error(msg)

    def pid(self) -> int | None:
        while self._pid is None and not self._eof:
            self._next()
        return self._pid

    def ready(self) -> bool:
        while not self._ready and not self._eof:
            self._next()
        return self._ready


def _await_ready(sock: Any) -> tuple[int | None, int | None]:
    """Both start messages: (pid, pty master); pid is None when the channel closed first."""
    chan = _StartChannel(sock)
    pid = chan.pid()
    return (pid if chan.ready() else None), chan.master


def _fault(point: str) -> None:
    """Crash-test hook: DEVBOX_FAULT=POINT makes devbox kill itself with SIGKILL at that point."""
    if os.environ.get("DEVBOX_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _have_overlay() -> bool:
    try:
        with open("/proc/filesystems") as f:
            return "overlay" in f.read()
    except OSError:
        return False


def _raise_child_error(msg: bytes) -> None:
    try:
        info = cjson.loads(msg[1:])
    except ValueError:
        info = {"kind": "internal", "message": msg.decode(errors="replace")}
    kind, text = info.get("kind"), info.get("message", "")
    if kind == "notfound":
        raise errors.CommandNotFound(text, hint="check the command name and the image's PATH")
    if kind == "noexec":
        raise errors.CommandNotExecutable(text, hint="check the file's mode and its #! line")
    if kind == "user":
        raise errors.ConfigError(text, hint="use a user that exists in the image, or a numeric uid[:gid]")
    if kind == "cwd":
        raise errors.ConfigError(text, hint="pick another --workdir")
    raise errors.KernelError(f"cannot start the container: {text}", hint="run with --debug for details")


def wait_foreground(st: Started, forwarder: Any = None, *, release: bool = False) -> int:
    """Relay stdio until the payload exits; record its exit code; return it. Signals are forwarded by
    `forwarder` (a console.SignalForwarder the caller installed before starting) or a new one."""
    from devbox.runtime import console

    c = st.container

    def wait() -> int:
        _, status = os.waitpid(st.wait_pid, 0)
        return console.exit_code(status)

    with console.nullcontext() if forwarder else console.SignalForwarder() as fwd:
        (forwarder or fwd).target(st.signal_pid)
        code = console.relay(st.wait_pid, st.relays, st.master, wait)
    if st.master is not None:
        os.close(st.master)
    with c.lock():
        c.state.update({"status": STOPPED, "exit_code": code, "finished_at": time.time(), "pid": None})
        c.save_state()
        # stray children, the cgroup, the veth; the IP stays reserved unless the container goes next (--rm)
        _teardown(c, keep_lease=not release, net_async=release)
        from devbox.runtime import cgroups

        # in memory: a remove() that follows (--rm) skips a second teardown when this one was complete
        c.state["needs_teardown"] = cgroups.manager_for(c.id).exists()
    return code


def mark_exited_children() -> None:
    """Reap zombies of containers we are subreaper for (foreground runs)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


# --------------------------------------------------------------------------------------------- exec


def exec_in(c: Container, args: list[str], *, env: list[str] | None = None, user: str | None = None,
            cwd: str | None = None, tty: bool = False, interactive: bool = False,
            stdio: tuple[int, int, int] | None = None,
            relays: list[tuple[int, int]] | None = None) -> Started:  # fmt: skip
    """Start `args` inside a running container; returns a handle for wait_foreground-style waiting."""
    from devbox.runtime import cgroups
    from devbox.runtime.caps import DEFAULT_CAPS, mask

    if c.refresh() != RUNNING:
        raise errors.IncorrectStatus(f"container {c.name} is not running", hint=f"start it: `devbox start {c.name}`")
    keep = (mask(DEFAULT_CAPS) | mask(c.spec.caps_add)) & ~mask(c.spec.caps_drop)
    cfg = {
        "target_pid": c.pid,
        "network": c.spec.network,
        "cgroup_procs": [os.fspath(p) for p in cgroups.manager_for(c.id).join_paths()],
        "tty": tty,
        "args": args,
        "env": list(c.spec.env) + list(env or []),
        "cwd": cwd or c.spec.cwd,
        "user": user if user is not None else c.spec.user,
        "caps": keep,
        "hostname": c.spec.hostname,
    }
    if stdio is None:
        stdio = (0, 1, 2)
    parent_sock, child_sock = L.seqpacket_pair()
    pid_c = os.fork()
    if pid_c == 0:
        parent_sock.close()
        nsinit.enter_and_exec(cfg, child_sock, stdio)
    child_sock.close()
    try:
        try:
            payload, master = _await_ready(parent_sock)
        except errors.DevboxError:
            os.waitpid(pid_c, 0)
            raise
        if payload is None:
            _, status = os.waitpid(pid_c, 0)
            raise errors.KernelError("cannot enter the container", hint="is it still running? see `devbox ps`")
        # the payload reports an exec failure on the same channel before its end closes on exec
        msg = parent_sock.recv(65536)
        if msg:
            os.waitpid(pid_c, 0)
            _raise_child_error(msg)
    finally:
        parent_sock.close()
    return Started(c, pid_c, payload, master, relays or [])


def wait_exec(st: Started) -> int:
    from devbox.runtime import console

    def wait() -> int:
        _, status = os.waitpid(st.wait_pid, 0)
        return console.exit_code(status)

    with console.forward_signals(lambda: st.signal_pid):
        code = console.relay(st.wait_pid, st.relays, st.master, wait)
    if st.master is not None:
        os.close(st.master)
    return code


def run_in(c: Container, args: list[str], *, user: str | None = None, capture: bool = True,
           timeout: float | None = None) -> tuple[int, bytes]:  # fmt: skip
    """Run a command in a running container without a terminal; return (exit code, stdout+stderr)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = exec_in(c, args, user=user, stdio=(null, w, w) if capture else (null, 1, 2))
    finally:
        os.close(w)
        os.close(null)
    out = b""
    deadline = None if timeout is None else time.monotonic() + timeout
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(r, selectors.EVENT_READ)
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if left == 0.0:
                try:
                    os.kill(st.signal_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                break
            if not sel.select(left):
                continue
            chunk = os.read(r, 65536)
            if not chunk:
                break
            out += chunk
    os.close(r)
    _, status = os.waitpid(st.wait_pid, 0)
    from devbox.runtime.console import exit_code

    return exit_code(status), out


# --------------------------------------------------------------------------------------------- stop / rm


def _signal_number(name: str | int) -> int:
    if isinstance(name, int) or str(name).isdigit():
        return int(name)
    n = str(name).upper()
    if not n.startswith("SIG"):
        n = "SIG" + n
    try:
        return int(getattr(signal, n))
    except AttributeError:
        raise errors.ConfigError(f"unknown signal {name!r}", hint="use a name like TERM, KILL, HUP or a number") from None


def kill(c: Container, sig: str | int = "KILL") -> None:
    signum = _signal_number(sig)
    with c.lock():
        if c.refresh() != RUNNING:
            raise errors.IncorrectStatus(f"container {c.name} is not running")
        if signum == signal.SIGKILL:
            from devbox.runtime import cgroups

            cgroups.manager_for(c.id).kill_all(signal.SIGKILL)
        else:
            try:
                os.kill(c.pid, signum)  # type: ignore[arg-type]
            except ProcessLookupError:
                pass


def stop(c: Container, timeout: float | None = None) -> None:
    """SIGTERM (or the image's stop signal) to PID 1, then SIGKILL to the whole cgroup after `timeout`."""
    from devbox.runtime import cgroups

    with c.lock():
        if c.refresh() != RUNNING:
            return
        pid, start_t = c.pid, c.state.get("pid_start")
        assert pid is not None
        try:
            os.kill(pid, _signal_number(c.spec.stop_signal))
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + (c.spec.stop_timeout if timeout is None else timeout)
        _wait_gone(pid, start_t, deadline)
        cg = cgroups.manager_for(c.id)
        if L.proc_start_time(pid) == start_t or cg.pids():
            cg.kill_all(signal.SIGKILL)
            _wait_gone(pid, start_t, time.monotonic() + 5)
        c.state.update({"status": STOPPED, "finished_at": time.time(), "pid": None})
        c.save_state()
        _teardown(c, cg, keep_lease=True)


def _wait_gone(pid: int, start_t: int | None, deadline: float) -> None:
    delay = 0.002
    while time.monotonic() < deadline:
        mark_exited_children()
        if L.proc_start_time(pid) != start_t:
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


# container id -> wait for the network detach that _teardown(..., net_async=True) left running
_PENDING: dict[str, Any] = {}


def _teardown(c: Container, cg: Any = None, keep_lease: bool = False, net_async: bool = False) -> None:
    """Undo what start did on the host: processes, cgroup, network. Tolerant of partial state.

    net_async=True (a --rm run, whose remove() follows at once): the network detach, mostly an
    nftables transaction (~3 ms, in libnftables without the GIL), runs in a thread while remove()
    deletes the container's files; remove() waits for it and raises what it raised."""
    from devbox.runtime import cgroups

    cg = cg or cgroups.manager_for(c.id)
    try:
        if cg.exists():
            cg.kill_all(signal.SIGKILL)
    except Exception:
        pass
    mark_exited_children()
    try:
        cg.remove()
    except Exception:
        pass
    if c.spec.network not in ("none", "host"):
        from devbox.runtime import network

        if not net_async:
            network.detach(c.id, release=not keep_lease)
            return
        import _thread  # threading's import costs more than this needs

        done = _thread.allocate_lock()
        done.acquire()
        failed: list[BaseException] = []

        def detach() -> None:
            try:
                network.detach(c.id, release=not keep_lease)
            except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
                failed.append(e)
            finally:
                done.release()

        def wait() -> None:
            done.acquire()
            if failed:
                raise failed[0]

        _thread.start_new_thread(detach, ())
        _PENDING[c.id] = wait


def _wait_pending(cid: str) -> None:
    wait = _PENDING.pop(cid, None)
    if wait is not None:
        wait()


def remove(c: Container, force: bool = False) -> None:
    try:
        with c.lock():
            status = c.refresh()
            if status == RUNNING and not force:
                raise errors.IncorrectStatus(f"container {c.name} is running",
                                             hint=f"stop it first (`devbox stop {c.name}`) or use `devbox rm -f`")  # fmt: skip
            if status != STOPPED or c.state.get("needs_teardown", True):
                _teardown(c)
            fsutil.rmtree(c.dir)
            try:
                os.unlink(os.path.join(paths.locks_dir(), f"container-{c.id}.lock"))
            except FileNotFoundError:
                pass
        _remove_empty_cgroup_parents()
    finally:
        _wait_pending(c.id)  # a --rm run's network detach, started by wait_foreground


def _remove_empty_cgroup_parents() -> None:
    """The `devbox/` cgroup parents go with the last container (nothing of devbox's stays behind)."""
    from devbox.runtime import cgroups

    with _lock_all():
        for d in cgroups.group_dirs():
            try:  # ENOENT, or EBUSY/ENOTEMPTY: another container is there
                os.rmdir(d)
            except OSError:
                pass


def reconcile() -> list[str]:
    """Clean up what a killed devbox left half-made. Returns the ids it cleaned."""
    cleaned = []
    base = paths.containers_dir()
    try:
        names = os.listdir(base)
    except (FileNotFoundError, NotADirectoryError):
        return cleaned
    for n in names:
        if n.startswith(".") and n.endswith(".tmp"):
            fsutil.rmtree(os.path.join(base, n))
            cleaned.append(n)
    for c in list_containers():
        st = c.state.get("status")
        if st == "broken":
            _teardown(c)
            c.state.update({"status": STOPPED if c.state.get("started_at") else CREATED, "pid": None,
                            "owner_pid": None})  # fmt: skip
            c.save_state()
            cleaned.append(c.id)
        elif st == STOPPED and c.state.get("needs_teardown", True):
            # a container that stopped on its own (detached) leaves its cgroup dir behind
            from devbox.runtime import cgroups

            cg = cgroups.manager_for(c.id)
            if cg.exists() and not cg.pids():
                try:
                    cg.remove()
                except Exception:
                    pass
    known = {c.id for c in list_containers()}
    # empty cgroups no container explains (a state root deleted under them, a crash between rmdirs);
    # rmdir of a cgroup only succeeds when it is empty, so this never touches a live container
    from devbox.runtime import cgroups

    for cid in set(cgroups.list_containers()) - known:
        cg = cgroups.manager_for(cid)
        if not cg.pids() and not _prestarting(cid):
            try:
                cg.remove(timeout=0.1)
                cleaned.append(cid)
            except Exception:
                pass
    if cleaned:
        _remove_empty_cgroup_parents()
    if os.path.isdir(paths.networks_dir()):
        from devbox.runtime import network

        network.reconcile(known)
    return cleaned


def used_layers() -> set[str]:
    """DiffIDs of the layers any container (running or not) is made of: `image prune` keeps them."""
    return {d for c in list_containers() for d in c.spec.diff_ids}


def users_of_image(digest: str) -> list[Container]:
    return [c for c in list_containers() if c.spec.image_digest == digest]
