"""The foreground side of `run` and `exec`: relay stdio, forward signals, keep the terminal sane.

With -t the container gets its own pty (opened inside its devpts); devbox puts the user's terminal in
raw mode and copies bytes both ways, propagating window-size changes. Without -t, stdio is passed
straight through when it is not a terminal, or relayed through pipes when it is one, so that the
container never holds the user's own terminal (no TIOCSTI into the user's shell).
"""

from __future__ import annotations

import _signal as signal  # the C module: signal.py's enums cost ~1 ms to import
import fcntl
import os
import struct
import termios
import tty

from devbox.runtime import linux as L

TYPE_CHECKING = False  # typing costs ~4 ms to import; only type checkers need it here
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

FORWARDED = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2]


def plan_stdio(interactive: bool, use_tty: bool) -> tuple[tuple[int, int, int], list[tuple[int, int]]]:
    """Choose the container's fds 0-2 for a foreground run without a pty.

    Returns (child_fds, relays) where relays are (read_fd, write_fd) pairs the parent must copy, and
    child_fds are the fds to hand to the child (the parent closes its copies of pipe ends after fork).
    """
    child: list[int] = []
    relays: list[tuple[int, int]] = []
    if interactive:
        if os.isatty(0):
            r, w = os.pipe()
            child.append(r)
            relays.append((0, w))
        else:
            child.append(0)
    else:
        child.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    for fd in (1, 2):
        if os.isatty(fd):
            r, w = os.pipe()
            child.append(w)
            relays.append((r, fd))
        else:
            child.append(fd)
    return (child[0], child[1], child[2]), relays


def winsize(fd: int) -> bytes | None:
    try:
        return fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return None


def set_winsize(fd: int, ws: bytes | None) -> None:
    if ws and struct.unpack("HHHH", ws)[:2] != (0, 0):
        try:
            fcntl.ioctl(fd, termios.TIOCSWINSZ, ws)
        except OSError:
            pass


class nullcontext:  # noqa: N801 -- contextlib's name, for `with a if x else nullcontext():`
    """contextlib.nullcontext() without contextlib: its import (functools, collections) costs ~3 ms
    of a `devbox run` that imports nothing else needing it."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class raw_terminal:  # noqa: N801 -- used like the function it was: `with raw_terminal(fd):`
    """Put the terminal `fd` (if it is one) in raw mode for the block; restore it after.

    A class rather than a contextlib.contextmanager: contextlib's import (functools, collections)
    costs ~3 ms of a `devbox run` that imports nothing else needing it."""

    __slots__ = ("fd", "old")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.old: list[Any] | None = None

    def __enter__(self) -> None:
        if not os.isatty(self.fd):
            return
        old = termios.tcgetattr(self.fd)
        tty.setraw(self.fd, termios.TCSANOW)  # TCSAFLUSH (the default) would drop what the user typed ahead
        self.old = old

    def __exit__(self, *exc: object) -> None:
        old, self.old = self.old, None
        if old is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, old)


class SignalForwarder:
    """Forward the usual terminating signals to the container's process.

    Installed before the container starts, so a signal that arrives while it is being created is not
    lost: it is kept until the target pid is known (`target(pid)`), then delivered.
    """

    def __init__(self) -> None:
        self.pid: int | None = None
        self.pending: list[int] = []
        self.old: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: object) -> None:
        if self.pid is None:
            self.pending.append(signum)
            return
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def target(self, pid: int) -> None:
        self.pid = pid
        while self.pending:
            try:
                os.kill(pid, self.pending.pop(0))
            except ProcessLookupError:
                pass

    def __enter__(self) -> SignalForwarder:
        self.old = {s: signal.signal(s, self._handler) for s in FORWARDED}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


class forward_signals:  # noqa: N801 -- used like the function it was: `with forward_signals(f):`
    """Forward signals to pid_getter() while the block runs.

    A class rather than a contextlib.contextmanager: contextlib's import (functools, collections)
    costs ~3 ms of a `devbox run` that imports nothing else needing it."""

    __slots__ = ("pid_getter", "fwd")

    def __init__(self, pid_getter: Callable[[], int | None]) -> None:
        self.pid_getter = pid_getter
        self.fwd = SignalForwarder()

    def __enter__(self) -> None:
        fwd = self.fwd.__enter__()
        try:
            pid = self.pid_getter()
            if pid:
                fwd.target(pid)
        except BaseException as e:
            fwd.__exit__(type(e), e, e.__traceback__)
            raise

    def __exit__(self, *exc: object) -> None:
        self.fwd.__exit__(*exc)


def relay(pid: int, relays: list[tuple[int, int]], master: int | None, wait: Callable[[], int]) -> int:
    """Copy bytes until the payload exits and its output is drained; return its exit code."""
    if not relays and master is None:  # the payload has our stdio itself: nothing to copy, just wait
        return wait()
    import selectors  # only for relays and terminals: a plain `run` waits without it

    sel = selectors.DefaultSelector()
    pairs: dict[int, int] = {}
    for r, w in relays:
        pairs[r] = w
    if master is not None:
        pairs[0] = master
        pairs[master] = 1
        set_winsize(master, winsize(0))

        def on_winch(_s: int, _f: object) -> None:
            set_winsize(master, winsize(0))

        signal.signal(signal.SIGWINCH, on_winch)
    for r in pairs:
        try:
            sel.register(r, selectors.EVENT_READ)
        except (ValueError, OSError, PermissionError):
            pass
    # wake-up pipe: SIGCHLD ends the select as soon as the payload exits
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    old_chld = signal.signal(signal.SIGCHLD, lambda *_: None)
    sel.register(wake_r, selectors.EVENT_READ)
    code: int | None = None
    try:
        with raw_terminal(0) if master is not None else nullcontext():
            while True:
                if code is None:
                    code = _poll_exit(pid, wait)
                outputs = [r for r in pairs if pairs[r] in (1, 2)]
                if code is not None and not any(r in sel.get_map() for r in outputs):
                    break
                events = sel.select(timeout=None if code is None else 0.2)
                if code is not None and not events:
                    break
                for key, _ in events:
                    fd = key.fd
                    if fd == wake_r:
                        try:
                            os.read(wake_r, 512)
                        except OSError:
                            pass
                        continue
                    try:
                        data = os.read(fd, 65536)
                    except OSError:
                        data = b""
                    if not data:
                        sel.unregister(fd)
                        if fd == 0 and master is None and pairs[fd] > 2:
                            os.close(pairs[fd])  # EOF on stdin: close the container's stdin
                        continue
                    _write_all(pairs[fd], data)
    finally:
        signal.set_wakeup_fd(old_wakeup)
        signal.signal(signal.SIGCHLD, old_chld)
        if master is not None:
            signal.signal(signal.SIGWINCH, signal.SIG_DFL)
        os.close(wake_r)
        os.close(wake_w)
        sel.close()
    return code if code is not None else wait()


def _poll_exit(pid: int, wait: Callable[[], int]) -> int | None:
    try:
        got, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return wait()
    if got == 0:
        return None
    return exit_code(status)


def exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            continue
        except OSError:
            return
        data = data[n:]


__all__ = ["plan_stdio", "relay", "forward_signals", "exit_code", "L"]
