"""Typed XML-RPC client for a box's supervisord. The only importer of supervisor.

Reaching the socket without trusting the box
--------------------------------------------
The socket lives in a host-owned run dir that is bind-mounted into the box at /run/devbox, so its host
path is not inside the box's overlay. But root in the box can still replace anything *inside* that
directory: `supervisor.sock` could become a symlink to a host socket (docker.sock, a database, another
box's supervisord), and a plain connect() follows symlinks. So every connection:

1. opens the run dir with O_PATH | O_DIRECTORY | O_NOFOLLOW (the host path's components are host
   owned; the last one is the bind-mount point and must not be a symlink either);
2. opens `supervisor.sock` relative to that fd with O_PATH | O_NOFOLLOW: a symlink is opened as the
   link itself, not followed;
3. fstat()s that fd and requires a socket (a symlink, FIFO or file is refused with ServiceError);
4. connects to `/proc/self/fd/N`, the magic link to exactly that inode: no path is resolved again,
   so there is no window for a swap between the check and the connect.

What the box can still do is answer with whatever it likes on its own socket: replies are untrusted
data (strings may hold terminal escapes; sizes are what the box says). Every call has a timeout.

Each call uses a fresh transport (style.md 4.2: SupervisorTransport keeps one persistent connection and
raises CannotSendRequest when reused after a failed connect); a connect costs well under a millisecond.
"""

from __future__ import annotations

import http.client
import os
import socket
import stat
import time
import xmlrpc.client
from dataclasses import dataclass
from typing import Any

from supervisor.states import RUNNING_STATES as _RUNNING_CODES
from supervisor.states import STOPPED_STATES as _STOPPED_CODES
from supervisor.states import SupervisorStates, getProcessStateDescription, getSupervisorStateDescription

from devbox.errors import ServiceError

SOCK_NAME = "supervisor.sock"

RUNNING = "RUNNING"
STARTING = "STARTING"
BACKOFF = "BACKOFF"
FATAL = "FATAL"
EXITED = "EXITED"
STOPPED = "STOPPED"
STOPPING = "STOPPING"
UNKNOWN = "UNKNOWN"
RUNNING_STATES = frozenset(str(getProcessStateDescription(c)) for c in _RUNNING_CODES)
STOPPED_STATES = frozenset(str(getProcessStateDescription(c)) for c in _STOPPED_CODES)
SUPERVISOR_RUNNING: str = str(getSupervisorStateDescription(SupervisorStates.RUNNING))


def _fault_name(code: int) -> str:
    # supervisor.xmlrpc costs ~40 ms to import (it pulls in importlib.metadata): only on the error path
    from supervisor.xmlrpc import Faults

    names = {v: k for k, v in vars(Faults).items() if not k.startswith("_") and isinstance(v, int)}
    return names.get(code, str(code))


class Unreachable(ServiceError):
    """supervisord's socket is missing, refuses connections, or is not a socket."""


class Fault(ServiceError):
    """supervisord answered with a fault, e.g. `BAD_NAME: web`."""

    def __init__(self, code: int, text: str) -> None:
        self.code = code
        self.name = _fault_name(code)
        self.detail = text.split(": ", 1)[1] if ": " in text else ""
        super().__init__(text if text.startswith(self.name) else f"{self.name}: {text}")


@dataclass(frozen=True)
class ProcessInfo:
    name: str
    group: str
    state: str  # statename: RUNNING, STARTING, BACKOFF, FATAL, EXITED, STOPPED, STOPPING, UNKNOWN
    pid: int
    start: int  # epoch seconds, 0 when never started
    stop: int
    now: int
    exitstatus: int
    spawnerr: str
    description: str

    @property
    def statename(self) -> str:
        """Same as `state` (supervisor's own key name)."""
        return self.state

    @property
    def uptime(self) -> int:
        """Seconds since the process started (0 when it is not running)."""
        return max(0, self.now - self.start) if self.state == RUNNING and self.start else 0

    @property
    def fullname(self) -> str:
        return self.name if self.group == self.name else f"{self.group}:{self.name}"

    @classmethod
    def from_rpc(cls, d: dict[str, Any]) -> ProcessInfo:
        return cls(
            name=str(d.get("name", "")), group=str(d.get("group", "")),
            state=str(d.get("statename", UNKNOWN)), pid=int(d.get("pid", 0) or 0),
            start=int(d.get("start", 0) or 0), stop=int(d.get("stop", 0) or 0),
            now=int(d.get("now", 0) or 0), exitstatus=int(d.get("exitstatus", 0) or 0),
            spawnerr=str(d.get("spawnerr", "")), description=str(d.get("description", "")),
        )  # fmt: skip


@dataclass(frozen=True)
class UpdateResult:
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)


class _Connection(http.client.HTTPConnection):
    """HTTP over the box's unix socket, connected without following symlinks (connect_unix)."""

    def __init__(self, run_dir: str, sock_name: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.run_dir = run_dir
        self.sock_name = sock_name

    def connect(self) -> None:
        self.sock = connect_unix(self.run_dir, self.sock_name, self.timeout)  # type: ignore[arg-type]


class _Transport(xmlrpc.client.Transport):
    """A fresh connection per call (supervisor's own transport keeps one, see the module doc)."""

    def __init__(self, run_dir: str, sock_name: str, timeout: float) -> None:
        super().__init__()
        self._args = (run_dir, sock_name, timeout)

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        conn = _Connection(*self._args)
        self._connection = (host, conn)
        return conn


def connect_unix(run_dir: str, sock_name: str, timeout: float) -> socket.socket:
    """Connect to `run_dir/sock_name` without following a symlink at either (see module doc)."""
    try:
        dfd = os.open(run_dir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise Unreachable(f"supervisor run dir {run_dir}: {e.strerror}") from None
    try:
        try:
            sfd = os.open(sock_name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as e:
            raise Unreachable(f"supervisor socket {run_dir}/{sock_name}: {e.strerror}") from None
        try:
            mode = os.fstat(sfd).st_mode
            if not stat.S_ISSOCK(mode):
                kind = "a symlink" if stat.S_ISLNK(mode) else "not a socket"
                raise Unreachable(
                    f"supervisor socket {run_dir}/{sock_name} is {kind}; refusing to connect",
                    hint="the box replaced its supervisor socket; recreate the box",
                )
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            s.settimeout(timeout)
            try:
                s.connect(f"/proc/self/fd/{sfd}")
            except OSError as e:
                s.close()
                raise Unreachable(f"supervisor socket {run_dir}/{sock_name}: {e.strerror or e}") from None
            return s
        finally:
            os.close(sfd)
    finally:
        os.close(dfd)


def open_box_file(dir_path: str | os.PathLike[str], name: str) -> int:
    """Open `dir_path/name` for reading when the box can write `dir_path` (the run dir, the program
    log dir): neither the directory nor the file may be a symlink, and the file must be a regular
    file, so a box cannot make the host read /etc/shadow through `devbox logs`. Returns a file
    descriptor (wrap it with os.fdopen(fd, "rb")); raises ServiceError."""
    if "/" in name or name in ("", ".", ".."):
        raise ServiceError(f"invalid file name {name!r}")
    try:
        dfd = os.open(dir_path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise ServiceError(f"{os.fspath(dir_path)}: {e.strerror}") from None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    except OSError as e:
        raise ServiceError(f"{os.fspath(dir_path)}/{name}: {e.strerror}") from None
    finally:
        os.close(dfd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ServiceError(f"{os.fspath(dir_path)}/{name} is not a regular file; refusing to read it")
    return fd


class Supervisor:
    """One box's supervisord, reached at `sock_path` (a path on the host, in the host-owned run dir).

    Every method raises Unreachable (a ServiceError) when the socket is not there or not answering,
    and Fault (a ServiceError, message "NAME: detail") when supervisord refuses a call.
    """

    def __init__(self, sock_path: str, timeout: float = 10.0) -> None:
        self.sock_path = os.fspath(sock_path)
        self.run_dir, self.sock_name = os.path.split(self.sock_path)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Supervisor({self.sock_path!r})"

    def _call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        transport = _Transport(self.run_dir, self.sock_name, timeout or self.timeout)
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport, allow_none=False)
        try:
            fn = proxy
            for part in method.split("."):
                fn = getattr(fn, part)
            return fn(*args)
        except xmlrpc.client.Fault as e:
            raise Fault(e.faultCode, e.faultString) from None
        except ServiceError:
            raise
        except (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError) as e:
            raise Unreachable(f"supervisord at {self.sock_path}: {method}: {e}") from None
        finally:
            transport.close()

    # ---- supervisord itself ------------------------------------------------------------------------

    def state(self) -> str:
        """supervisord's own state name: RUNNING, RESTARTING, SHUTDOWN or FATAL."""
        return str(self._call("supervisor.getState")["statename"])

    def pid(self) -> int:
        return int(self._call("supervisor.getPID"))

    def ping(self) -> bool:
        """True when supervisord answers and is RUNNING; never raises."""
        try:
            return self.state() == SUPERVISOR_RUNNING
        except ServiceError:
            return False

    def wait_ready(self, deadline: float, poll: float = 0.02) -> None:
        """Wait until supervisord answers and is RUNNING, until `deadline` (time.monotonic())."""
        last: Exception | None = None
        while True:
            try:
                st = self.state()
                if st == SUPERVISOR_RUNNING:
                    return
                last = ServiceError(f"supervisord is {st}")
            except ServiceError as e:
                last = e
            if time.monotonic() >= deadline:
                raise ServiceError(f"supervisord at {self.sock_path} not ready: {last}")
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    def shutdown(self) -> None:
        """Ask supervisord to stop every program and exit (asynchronous)."""
        self._call("supervisor.shutdown")

    # ---- processes ---------------------------------------------------------------------------------

    def processes(self, internal: bool = False) -> list[ProcessInfo]:
        """The box's services; devbox's own helpers (names starting with "_", such as the
        `_devbox_logs` event listener; service names cannot) only with `internal`."""
        infos = [ProcessInfo.from_rpc(d) for d in self._call("supervisor.getAllProcessInfo")]
        return [p for p in infos if internal or not p.name.startswith("_")]

    def info(self, name: str) -> ProcessInfo:
        return ProcessInfo.from_rpc(self._call("supervisor.getProcessInfo", name))

    def start(self, name: str, wait: bool = True, timeout: float | None = None) -> None:
        """Start `name`; with wait, return once it is RUNNING (it stayed up startsecs).

        A program that dies at once raises Fault SPAWN_ERROR; read info() for what happened next."""
        self._call("supervisor.startProcess", name, wait, timeout=timeout or max(self.timeout, 60.0))

    def stop(self, name: str, wait: bool = True, timeout: float | None = None) -> None:
        self._call("supervisor.stopProcess", name, wait, timeout=timeout or max(self.timeout, 60.0))

    def restart(self, name: str, timeout: float | None = None) -> None:
        """Stop (if running) then start, waiting for RUNNING."""
        try:
            self.stop(name, wait=True, timeout=timeout)
        except Fault as e:
            if e.name != "NOT_RUNNING":
                raise
        self.start(name, wait=True, timeout=timeout)

    def signal(self, name: str, sig: str | int) -> None:
        """Send a signal ("HUP", "SIGHUP" or a number) to a running program."""
        if isinstance(sig, str):
            sig = sig.upper().removeprefix("SIG")
        self._call("supervisor.signalProcess", name, str(sig))

    def tail(self, name: str, stream: str = "stderr", length: int = 4096) -> str:
        """The last `length` bytes of a program's stdout or stderr log."""
        method = {"stdout": "tailProcessStdoutLog", "stderr": "tailProcessStderrLog"}.get(stream)
        if method is None:
            raise ValueError(f"stream must be stdout or stderr, got {stream!r}")
        text, _offset, _overflow = self._call(f"supervisor.{method}", name, 0, length)
        return str(text)

    def tail_from(self, name: str, stream: str, offset: int, length: int = 65536) -> tuple[str, int, bool]:
        """(text, new_offset, overflow) from `offset` on: the building block of `logs -f`."""
        method = {"stdout": "tailProcessStdoutLog", "stderr": "tailProcessStderrLog"}[stream]
        text, new, overflow = self._call(f"supervisor.{method}", name, offset, length)
        return str(text), int(new), bool(overflow)

    def read_log(self, name: str, stream: str = "stdout", offset: int = 0, length: int = 0) -> str:
        """`length` bytes from `offset` (negative offset: from the end; length 0: to the end)."""
        method = {"stdout": "readProcessStdoutLog", "stderr": "readProcessStderrLog"}.get(stream)
        if method is None:
            raise ValueError(f"stream must be stdout or stderr, got {stream!r}")
        return str(self._call(f"supervisor.{method}", name, offset, length))

    def update(self) -> UpdateResult:
        """Re-read supervisord.conf and apply it, as `supervisorctl update` does.

        Removed groups are stopped and removed; changed groups are stopped, removed and added again;
        added groups are added (and start on supervisord's next tick if autostart=true)."""
        ((added, changed, removed),) = self._call("supervisor.reloadConfig")
        for group in removed:
            self._stop_group(group)
            self._call("supervisor.removeProcessGroup", group)
        for group in changed:
            self._stop_group(group)
            self._call("supervisor.removeProcessGroup", group)
            self._call("supervisor.addProcessGroup", group)
        for group in added:
            self._call("supervisor.addProcessGroup", group)
        return UpdateResult(tuple(added), tuple(changed), tuple(removed))

    def _stop_group(self, group: str) -> None:
        try:
            self._call("supervisor.stopProcessGroup", group, True, timeout=max(self.timeout, 60.0))
        except Fault as e:
            if e.name not in ("NOT_RUNNING", "BAD_NAME"):
                raise
