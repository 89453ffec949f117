"""Small filesystem helpers shared by every layer: atomic writes, flock-based locks, a safe rmtree.

Kept to cheap imports (no tempfile, shutil or hashlib: together ~8 ms, a tenth of `devbox run`)."""

from __future__ import annotations

import fcntl
import os

from devbox import cjson

TYPE_CHECKING = False  # typing costs ~4 ms to import; only type checkers need it here
if TYPE_CHECKING:
    from typing import Any

    StrPath = str | os.PathLike[str]


def atomic_write(path: StrPath, data: bytes | str, mode: int = 0o644) -> None:
    """Write `data` to `path` so that readers see the old or the new content, never a mix."""
    parent, name = os.path.split(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    tmp = os.path.join(parent, f".{name}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(path: StrPath, obj: Any, mode: int = 0o644, *, indent: int | None = None) -> None:
    """Compact by default (devbox's own state files); `indent` for files people read and edit."""
    atomic_write(path, cjson.dumps(obj, sort_keys=True, indent=indent) + "\n", mode)


def read_json(path: StrPath) -> Any:
    with open(path, "rb") as f:
        return cjson.load(f)


class locked:  # noqa: N801 -- used like the function it was: `with fsutil.locked(path):`
    """Hold an flock on `path` (created if needed) for the duration of the block.

    A class rather than a contextlib.contextmanager: contextlib's import (functools, collections)
    costs ~3 ms of a `devbox run` that imports nothing else needing it."""

    __slots__ = ("path", "shared", "fd")

    def __init__(self, path: StrPath, shared: bool = False) -> None:
        self.path = os.fspath(path)
        self.shared = shared
        self.fd = -1

    def __enter__(self) -> None:
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def __exit__(self, *exc: object) -> None:
        fd, self.fd = self.fd, -1
        os.close(fd)


def find_upwards(start: StrPath, filename: str) -> str | None:
    """The nearest `filename` (a regular file) in `start` or one of its parents, or None."""
    d = os.path.abspath(start)
    while True:
        f = os.path.join(d, filename)
        if os.path.isfile(f):
            return f
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of `data`, without loading OpenSSL (hashlib's import costs ~3 ms)."""
    try:
        from _sha256 import sha256  # CPython's own implementation (3.11; _sha2 from 3.12)
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[no-redef]
        except ImportError:
            from hashlib import sha256
    return sha256(data).hexdigest()


def rmtree(path: str | os.PathLike[str]) -> None:
    """Remove a directory tree, ignoring errors, never following a symlink out of it.

    Walks with directory fds (O_NOFOLLOW, unlink relative to the parent fd), as shutil.rmtree's safe
    variant does, so a tree written by a container cannot redirect the removal onto the host."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError:  # a symlink or a file: remove the name itself
        try:
            os.unlink(path)
        except OSError:
            pass
        return
    try:
        _rmtree_fd(fd)
    except RecursionError:  # a tree deeper than the interpreter's stack: shutil's walk takes it
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    finally:
        os.close(fd)
    try:
        os.rmdir(path)
    except OSError:
        pass


def _rmtree_fd(dfd: int) -> None:
    try:
        with os.scandir(dfd) as it:
            entries = list(it)
    except OSError:
        entries = []
    for e in entries:
        try:
            is_dir = e.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            try:
                sub = os.open(e.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            except OSError:
                continue
            try:
                _rmtree_fd(sub)
            finally:
                os.close(sub)
            try:
                os.rmdir(e.name, dir_fd=dfd)
            except OSError:
                pass
        else:
            try:
                os.unlink(e.name, dir_fd=dfd)
            except OSError:
                pass
