"""Safe layer extraction, and the reverse (an overlay upper dir -> an OCI layer tar).

The most dangerous code in devbox: a layer tar is untrusted input and extraction runs as root.
The rules, enforced for every entry:

- names and hardlink targets are relative; absolute names and `..` components are refused;
- every parent directory is opened with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|...) from an fd
  of the layer root, so a symlink anywhere in the parent path is refused (a tar made from a real tree
  never has an entry below a symlink; `a -> /etc` then `a/passwd` is an attack);
- the last component is created relative to that parent fd without following it: an existing entry
  is removed first (never opened for writing), files are opened O_CREAT|O_EXCL|O_NOFOLLOW, and
  owner/mode/xattrs/times are set on the new fd (or with AT_SYMLINK_NOFOLLOW for symlinks);
- char/block devices are refused, except overlay whiteouts (char 0/0) and nodes under `dev/`, which
  are skipped (the runtime mounts its own /dev over them); fifos are allowed;
- only safe xattrs are kept (`security.capability`, `user.*`); `trusted.*` and `security.selinux`
  are dropped;
- the uncompressed size is capped (DEVBOX_MAX_LAYER_BYTES, default 16 GiB) and ENOSPC becomes a
  clear "disk full" error.

The DiffID (sha256 of the uncompressed tar) is computed while streaming; the caller verifies it and
decides whether to register the directory (store.py renames it into place only then).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from devbox.errors import ImageError
from devbox.log import log
from devbox.runtime import linux

ENV_MAX_LAYER_BYTES = "DEVBOX_MAX_LAYER_BYTES"
DEFAULT_MAX_LAYER_BYTES = 16 << 30

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
SAFE_XATTRS = frozenset({"security.capability"})
SAFE_XATTR_PREFIXES = ("user.",)

_RESOLVE = linux.RESOLVE_BENEATH | linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS | linux.RESOLVE_NO_XDEV
_CHUNK = 1 << 20

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def max_layer_bytes() -> int:
    raw = os.environ.get(ENV_MAX_LAYER_BYTES)
    if not raw:
        return DEFAULT_MAX_LAYER_BYTES
    try:
        return int(raw)
    except ValueError:
        raise ImageError(f"{ENV_MAX_LAYER_BYTES}={raw!r} is not a number of bytes",
                         hint=f"unset it or set e.g. {ENV_MAX_LAYER_BYTES}={DEFAULT_MAX_LAYER_BYTES}") from None  # fmt: skip


@dataclass
class UnpackResult:
    diff_id: str  # sha256 of the uncompressed tar stream
    size: int  # uncompressed bytes read
    entries: int
    skipped: int  # device nodes under dev/ and the like


class UnsafeEntry(ImageError):
    pass


def _unsafe(name: str, why: str) -> UnsafeEntry:
    return UnsafeEntry(f"refusing unsafe layer entry {name!r}: {why}",
                       hint="the image is corrupt or hostile; nothing was registered")  # fmt: skip


def _disk_full(where: str | os.PathLike[str]) -> ImageError:
    return ImageError(f"disk full while unpacking a layer under {os.fspath(where)}",
                      hint="free some space (devbox image prune) and retry")  # fmt: skip


# --- decompression ------------------------------------------------------------------------------------


def sniff_compression(path: Path | str) -> str:
    """'gzip', 'zstd' or 'none', from the first bytes of the file."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


# The gzip decompressor runs in a child interpreter so it overlaps with tar parsing and file writes
# (devbox starts no threads outside watch.py). It is a fresh `python -I -S`, not a fork.
_GUNZIP_CHILD = r"""
import os, sys
if len(sys.argv) > 1:  # where python-isal lives (optional, ~1.5x faster inflate)
    sys.path.insert(0, sys.argv[1])
    from isal import isal_zlib as zlib
else:
    import zlib
fi, fo = sys.stdin.fileno(), sys.stdout.fileno()
def out(b):
    mv = memoryview(b)
    while mv:
        mv = mv[os.write(fo, mv):]
d = zlib.decompressobj(31)
try:
    while True:
        b = os.read(fi, 1 << 20)
        if not b:
            break
        while b:
            if d.eof:
                if not b.strip(b"\0"):
                    break  # zero padding after the last member
                d = zlib.decompressobj(31)
            out(d.decompress(b))
            b = d.unused_data if d.eof else b""
    out(d.flush())
except Exception as e:  # zlib.error / isal_zlib.error
    sys.exit(f"gzip: {e}")
if not d.eof:
    sys.exit("gzip: unexpected end of data (truncated blob)")
"""


def _isal_path() -> list[str]:
    """[dir containing the `isal` package] when python-isal is installed, else []."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("isal")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [os.path.dirname(list(spec.submodule_search_locations)[0])]


class _ChildReader:
    """Reads stdout of a decompressor child; checks its exit status at the end."""

    def __init__(self, argv: list[str], src: BinaryIO, what: str) -> None:
        self.what = what
        self.proc = subprocess.Popen(argv, stdin=src, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     close_fds=True)  # fmt: skip
        assert self.proc.stdout is not None
        try:
            import fcntl

            fcntl.fcntl(self.proc.stdout.fileno(), 1031, 1 << 20)  # F_SETPIPE_SZ
        except OSError:
            pass
        self.fd = self.proc.stdout.fileno()
        self.eof = False

    def read(self, n: int) -> bytes:
        if self.eof:
            return b""
        b = os.read(self.fd, n)
        if not b:
            self.eof = True
            self._check()
        return b

    def _check(self) -> None:
        rc = self.proc.wait()
        if rc != 0:
            err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace").strip()
            last = err.splitlines()[-1] if err else f"exit status {rc}"
            raise ImageError(f"cannot decompress layer ({self.what}): {last}",
                             hint="the blob is corrupt; remove the image and fetch it again")  # fmt: skip

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


class _RawReader:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f

    def read(self, n: int) -> bytes:
        return self.f.read(n)

    def close(self) -> None:
        pass


@contextmanager
def open_decompressed(path: Path | str, compression: str | None = None) -> Iterator[_RawReader | _ChildReader]:
    """Yield a reader of the uncompressed content of `path` (gzip, zstd or plain)."""
    kind = compression or sniff_compression(path)
    with open(path, "rb", buffering=0) as f:
        if kind == "gzip":
            argv = [sys.executable, "-I", "-S", "-c", _GUNZIP_CHILD] + _isal_path()
            r: _RawReader | _ChildReader = _ChildReader(argv, f, "gzip")
        elif kind == "zstd":
            zstd = shutil.which("zstd")
            if not zstd:
                raise ImageError("layer is zstd-compressed and the zstd program is missing",
                                 hint="apt-get install zstd")  # fmt: skip
            r = _ChildReader([zstd, "-d", "-c", "-q"], f, "zstd")
        elif kind == "none":
            r = _RawReader(f)
        else:
            raise ImageError(f"unsupported layer compression {kind!r}", hint="use gzip, zstd or none")
        try:
            yield r
        finally:
            r.close()


class _HashingReader:
    """File-like wrapper: hashes and counts what tarfile reads, and enforces the size cap."""

    def __init__(self, src: _RawReader | _ChildReader, limit: int) -> None:
        self.src = src
        self.limit = limit
        self.h = hashlib.sha256()
        self.n = 0

    def read(self, n: int = -1) -> bytes:
        b = self.src.read(n if n and n > 0 else _CHUNK)
        if b:
            self.n += len(b)
            if self.n > self.limit:
                raise ImageError(f"layer is larger than the limit of {self.limit} uncompressed bytes",
                                 hint=f"a decompression bomb? raise {ENV_MAX_LAYER_BYTES} if the image is genuine")  # fmt: skip
            self.h.update(b)
        return b

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()



# --- a streaming tar reader ---------------------------------------------------------------------------
# tarfile's stream mode costs ~100 us per member (header parsing, small buffered reads); this reader
# parses ustar/GNU/pax headers straight out of 1 MiB chunks. Sparse files and unknown entry types are
# refused (layers made by docker/buildah/devbox never contain them).

REGTYPE, AREGTYPE, LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE, CONTTYPE = (
    b"0", b"\0", b"1", b"2", b"3", b"4", b"5", b"6", b"7")  # fmt: skip
_MAX_META = 1 << 20  # pax / GNU long name payloads


class Member:
    """One tar entry, with tarfile.TarInfo's vocabulary."""

    __slots__ = ("name", "type", "mode", "uid", "gid", "size", "mtime", "linkname", "devmajor", "devminor",
                 "xattrs")  # fmt: skip

    name: str
    type: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime: float
    linkname: str
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes]

    def __init__(self) -> None:
        self.xattrs = {}

    def isreg(self) -> bool:
        return self.type in (REGTYPE, AREGTYPE, CONTTYPE)

    def isdir(self) -> bool:
        return self.type == DIRTYPE

    def issym(self) -> bool:
        return self.type == SYMTYPE

    def islnk(self) -> bool:
        return self.type == LNKTYPE

    def ischr(self) -> bool:
        return self.type == CHRTYPE

    def isblk(self) -> bool:
        return self.type == BLKTYPE

    def isfifo(self) -> bool:
        return self.type == FIFOTYPE


def _bad_tar(why: str) -> ImageError:
    return ImageError(f"layer is not a valid tar: {why}", hint="the blob is corrupt or not a layer")


def _num(field: bytes) -> int:
    if not field[0] & 0x80:
        try:
            return int(field.strip(b" \0") or b"0", 8)
        except ValueError:
            pass  # junk after the NUL: the slow path below
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    if field[:1] == b"\xff":
        raise _bad_tar("negative number in a header")
    s = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(s, 8) if s else 0
    except ValueError:
        raise _bad_tar(f"bad number {s!r} in a header") from None


def _cstr(field: bytes) -> bytes:
    return field.split(b"\0", 1)[0]


def _parse_pax(data: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    i = 0
    while i < len(data):
        if data[i] == 0:
            break
        sp = data.find(b" ", i)
        try:
            length = int(data[i:sp])
        except ValueError:
            raise _bad_tar("malformed pax header") from None
        if sp < 0 or length <= sp - i or i + length > len(data):
            raise _bad_tar("malformed pax header")
        rec = data[sp + 1 : i + length - 1]
        k, eq, v = rec.partition(b"=")
        if not eq:
            raise _bad_tar("malformed pax record")
        out[k.decode("utf-8", "surrogateescape")] = v
        i += length
    return out


class TarReader:
    def __init__(self, src: _HashingReader) -> None:
        self.src = src
        self.buf = b""
        self.pos = 0
        self._pending = 0

    def _take(self, n: int) -> bytes:
        if len(self.buf) - self.pos >= n:
            b = self.buf[self.pos : self.pos + n]
            self.pos += n
            return b
        parts = [self.buf[self.pos :]]
        have = len(parts[0])
        while have < n:
            chunk = self.src.read(_CHUNK)
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        self.buf, self.pos = data, min(n, len(data))
        return data[:n]

    def copy(self, n: int, fd: int | None) -> None:
        """Pass the next `n` data bytes to `fd` (or skip them), then the padding to 512."""
        self._pending = 0
        pad = -n % 512
        while n > 0:
            if self.pos >= len(self.buf):
                self.buf, self.pos = self.src.read(_CHUNK), 0
                if not self.buf:
                    raise _bad_tar("truncated file data")
            take = min(n, len(self.buf) - self.pos)
            if fd is not None:
                mv = memoryview(self.buf)[self.pos : self.pos + take]
                while mv:
                    mv = mv[os.write(fd, mv) :]
            self.pos += take
            n -= take
        if pad and len(self._take(pad)) != pad:
            raise _bad_tar("truncated padding")

    def _data(self, n: int) -> bytes:
        if n > _MAX_META:
            raise _bad_tar("oversized pax or long-name header")
        b = self._take(n)
        if len(b) != n:
            raise _bad_tar("truncated header data")
        self._take(-n % 512)
        return b

    def members(self) -> Iterator[Member]:
        """Yield members; the caller must consume each regular file's data with `copy` before the next."""
        gpax: dict[str, bytes] = {}
        pax: dict[str, bytes] = {}
        longname = longlink = None
        while True:
            h = self._take(512)
            if len(h) < 512:
                if not h and not pax and longname is None:
                    return  # EOF without end-of-archive blocks: accepted, like GNU tar
                raise _bad_tar("truncated header")
            if h.count(0) == 512:
                return  # end of archive (the rest is drained by the caller for the DiffID)
            chk = _num(h[148:156])
            if chk != sum(h) - sum(h[148:156]) + 256:
                raise _bad_tar("header checksum mismatch")
            t = h[156:157]
            size = _num(h[124:136])
            if t == b"x":
                pax = _parse_pax(self._data(size))
                continue
            if t == b"g":
                gpax.update(_parse_pax(self._data(size)))
                continue
            if t == b"L":
                longname = _cstr(self._data(size))
                continue
            if t == b"K":
                longlink = _cstr(self._data(size))
                continue
            if t == b"V":
                self.copy(size, None)
                continue
            m = Member()
            name = _cstr(h[0:100])
            if h[257:263] == b"ustar\0":
                prefix = _cstr(h[345:500])
                if prefix:
                    name = prefix + b"/" + name
            m.type = t
            m.mode = _num(h[100:108])
            m.uid = _num(h[108:116])
            m.gid = _num(h[116:124])
            m.size = size
            m.mtime = float(_num(h[136:148]))
            link = _cstr(h[157:257])
            if t == CHRTYPE or t == BLKTYPE:
                m.devmajor, m.devminor = _num(h[329:337]), _num(h[337:345])
            else:
                m.devmajor = m.devminor = 0
            allpax = dict(gpax, **pax) if gpax else pax
            if longname is not None:
                name = longname
            if longlink is not None:
                link = longlink
            if allpax:
                if any(k.startswith("GNU.sparse") for k in allpax):
                    raise _bad_tar("sparse files are not supported")
                try:
                    if "path" in allpax:
                        name = allpax["path"]
                    if "linkpath" in allpax:
                        link = allpax["linkpath"]
                    if "size" in allpax:
                        m.size = int(allpax["size"])
                    if "uid" in allpax:
                        m.uid = int(allpax["uid"])
                    if "gid" in allpax:
                        m.gid = int(allpax["gid"])
                    if "mtime" in allpax:
                        m.mtime = float(allpax["mtime"])
                except ValueError:
                    raise _bad_tar("bad number in a pax header") from None
                m.xattrs = {k[13:]: v for k, v in allpax.items() if k.startswith("SCHILY.xattr.")}
            pax = {}
            longname = longlink = None
            m.name = name.decode("utf-8", "surrogateescape")
            m.linkname = link.decode("utf-8", "surrogateescape")
            if t == AREGTYPE and m.name.endswith("/"):
                m.type = DIRTYPE
            if t == b"S":
                raise _bad_tar(f"sparse file {m.name!r} is not supported")
            if t not in (REGTYPE, AREGTYPE, CONTTYPE, LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE):
                raise _unsafe(m.name, f"unsupported tar entry type {t!r}")
            if m.uid < 0 or m.gid < 0 or m.uid > 0xFFFFFFFE or m.gid > 0xFFFFFFFE:
                raise _bad_tar(f"bad owner of {m.name!r}")
            if m.size < 0:
                raise _bad_tar(f"negative size of {m.name!r}")
            if not 0 <= m.mtime < 1 << 34:  # also NaN and inf from a pax header
                m.mtime = 0.0
            self._pending = m.size if m.isreg() else 0  # only regular files carry data (as in tarfile)
            yield m
            if self._pending:
                self.copy(self._pending, None)  # the consumer did not want the data


# --- extraction ---------------------------------------------------------------------------------------


def _split(name: str) -> tuple[str, str] | None:
    """(parent, base) of a tar name, or None for the root itself. Refuses absolute names and `..`."""
    if name.startswith("/"):
        raise _unsafe(name, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _unsafe(name, "'..' in path")
    if not parts:
        return None
    return "/".join(parts[:-1]), parts[-1]


class _Extractor:
    def __init__(self, dest: Path, skip: Callable[[Member], bool] | None) -> None:
        self.dest = dest
        self.root_fd = os.open(dest, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self.skip = skip
        self.is_root = os.geteuid() == 0
        self._cached: tuple[str, int] | None = None
        self.dir_times: list[tuple[str, int]] = []
        self.skipped = 0
        self.entries = 0

    def close(self) -> None:
        self._drop_cache()
        os.close(self.root_fd)

    def _drop_cache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    # parent directories ----------------------------------------------------------------------------

    def _open_dir(self, rel: str, name: str, create: bool = True, flags: int = os.O_PATH) -> int:
        try:
            return linux.openat2(self.root_fd, rel, flags | os.O_DIRECTORY, resolve=_RESOLVE)
        except OSError as e:
            if e.errno == errno.ENOENT and create:
                return self._mkdirs(rel, name)
            if e.errno in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR):
                raise _unsafe(name, f"parent {rel!r} is a symlink or not a directory") from None
            raise

    def _mkdirs(self, rel: str, name: str) -> int:
        cur = os.dup(self.root_fd)
        try:
            for comp in rel.split("/"):
                try:
                    nxt = linux.openat2(cur, comp, os.O_PATH | os.O_DIRECTORY, resolve=_RESOLVE)
                except OSError as e:
                    if e.errno != errno.ENOENT:
                        raise _unsafe(name, f"parent {rel!r} is a symlink or not a directory") from None
                    os.mkdir(comp, 0o755, dir_fd=cur)
                    nxt = linux.openat2(cur, comp, os.O_PATH | os.O_DIRECTORY, resolve=_RESOLVE)
                os.close(cur)
                cur = nxt
            return cur
        except BaseException:
            os.close(cur)
            raise

    def parent(self, rel: str, name: str) -> int:
        if self._cached is not None and self._cached[0] == rel:
            return self._cached[1]
        fd = self._open_dir(rel, name) if rel else os.dup(self.root_fd)
        self._drop_cache()
        self._cached = (rel, fd)
        return fd

    # entries ---------------------------------------------------------------------------------------

    def _remove(self, pfd: int, base: str) -> None:
        try:
            st = os.lstat(base, dir_fd=pfd)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if self._cached is not None and self._cached[1] != pfd:
                self._drop_cache()  # the cached parent may be inside the removed tree
            shutil.rmtree(base, dir_fd=pfd)
        else:
            os.unlink(base, dir_fd=pfd)

    def _own(self, fd: int, m: Member) -> None:
        if self.is_root:
            os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, m.mode & 0o7777)

    def _xattrs(self, fd: int, m: Member) -> None:
        for attr, raw in m.xattrs.items():
            if attr in SAFE_XATTRS or attr.startswith(SAFE_XATTR_PREFIXES):
                try:
                    os.setxattr(fd, attr, raw)
                except OSError as e:
                    if e.errno not in (errno.EOPNOTSUPP, errno.EPERM):
                        raise
                    log.debug("cannot set xattr %s on %s: %s", attr, m.name, e)
            else:
                log.debug("dropping xattr %s on %s", attr, m.name)

    def entry(self, tr: TarReader, m: Member) -> None:
        name = m.name
        split = _split(name)
        self.entries += 1
        if self.skip is not None and self.skip(m):
            self.skipped += 1
            return
        if split is None:
            if m.isdir():
                fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.root_fd)
                try:
                    self._own(fd, m)
                    self._xattrs(fd, m)
                finally:
                    os.close(fd)
                self.dir_times.append(("", int(m.mtime * 10**9)))
            return
        rel, base = split
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(rel, base, name)
            return
        if m.ischr() or m.isblk():
            if m.ischr() and m.devmajor == 0 and m.devminor == 0:
                pfd = self.parent(rel, name)
                self._remove(pfd, base)
                os.mknod(base, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
                return
            if rel == "dev" or rel.startswith("dev/"):
                log.debug("skipping device node %s", name)
                self.skipped += 1
                return
            raise _unsafe(name, "device node")
        pfd = self.parent(rel, name)
        if m.isreg():
            self._file(tr, m, pfd, base)
        elif m.isdir():
            self._dir(m, pfd, rel, base)
        elif m.issym():
            self._remove(pfd, base)
            os.symlink(m.linkname, base, dir_fd=pfd)
            if self.is_root:
                os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
            t = int(m.mtime * 10**9)
            os.utime(base, ns=(t, t), dir_fd=pfd, follow_symlinks=False)
        elif m.islnk():
            self._hardlink(m, pfd, rel, base)
        elif m.isfifo():
            self._remove(pfd, base)
            os.mkfifo(base, 0o600, dir_fd=pfd)
            if self.is_root:
                os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
            os.chmod(base, m.mode & 0o7777, dir_fd=pfd)  # just created by us, a fifo: nothing to follow
        else:
            raise _unsafe(name, f"unsupported tar entry type {m.type!r}")

    def _file(self, tr: TarReader, m: Member, pfd: int, base: str) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(base, flags, 0o600, dir_fd=pfd)
        except FileExistsError:
            self._remove(pfd, base)
            fd = os.open(base, flags, 0o600, dir_fd=pfd)
        try:
            tr.copy(m.size, fd)
            self._own(fd, m)
            self._xattrs(fd, m)
            t = int(m.mtime * 10**9)
            os.utime(fd, ns=(t, t))
        finally:
            os.close(fd)

    def _dir(self, m: Member, pfd: int, rel: str, base: str) -> None:
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
        except FileExistsError:
            st = os.lstat(base, dir_fd=pfd)
            if not stat.S_ISDIR(st.st_mode):
                self._remove(pfd, base)
                os.mkdir(base, 0o700, dir_fd=pfd)
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        try:
            self._own(fd, m)
            self._xattrs(fd, m)
        finally:
            os.close(fd)
        self.dir_times.append((f"{rel}/{base}" if rel else base, int(m.mtime * 10**9)))

    def _hardlink(self, m: Member, pfd: int, rel: str, base: str) -> None:
        tsplit = _split(m.linkname)
        if tsplit is None:
            raise _unsafe(m.name, "hardlink to the layer root")
        trel, tbase = tsplit
        if (trel, tbase) == (rel, base):
            return  # a link to itself
        tfd = self._open_dir(trel, m.name, create=False) if trel else os.dup(self.root_fd)
        try:
            try:
                st = os.lstat(tbase, dir_fd=tfd)
            except FileNotFoundError:
                raise _unsafe(m.name, f"hardlink target {m.linkname!r} is not in this layer") from None
            if stat.S_ISDIR(st.st_mode):
                raise _unsafe(m.name, "hardlink to a directory")
            self._remove(pfd, base)
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def _whiteout(self, rel: str, base: str, name: str) -> None:
        if base == OPAQUE_MARKER:
            if rel:
                self.parent(rel, name)  # creates it when the tar has no entry for the directory itself
            fd = linux.openat2(self.root_fd, rel or ".", os.O_RDONLY | os.O_DIRECTORY, resolve=_RESOLVE)
            try:
                os.setxattr(fd, OVERLAY_OPAQUE_XATTR, b"y")
            finally:
                os.close(fd)
            return
        target = base[len(WHITEOUT_PREFIX) :]
        if target.startswith(WHITEOUT_PREFIX) or not target:
            log.debug("skipping special whiteout entry %s", name)  # .wh..wh.plnk and the like (aufs)
            self.skipped += 1
            return
        if target in (".", ".."):
            raise _unsafe(name, "whiteout of '.' or '..'")
        pfd = self.parent(rel, name)
        self._remove(pfd, target)
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)

    def finish(self) -> None:
        self._drop_cache()
        for rel, t in reversed(self.dir_times):
            try:
                fd = linux.openat2(self.root_fd, rel or ".", os.O_RDONLY | os.O_DIRECTORY, resolve=_RESOLVE)
            except OSError:
                continue  # replaced later in the tar; nothing to do
            try:
                os.utime(fd, ns=(t, t))
            finally:
                os.close(fd)


def extract(src: _RawReader | _ChildReader | BinaryIO, dest: Path, *, max_bytes: int | None = None,
            skip: Callable[[Member], bool] | None = None) -> UnpackResult:  # fmt: skip
    """Safely extract the uncompressed tar stream `src` into the empty directory `dest`."""
    limit = max_layer_bytes() if max_bytes is None else max_bytes
    reader = _HashingReader(src if hasattr(src, "close") else _RawReader(src), limit)  # type: ignore[arg-type]
    ex = _Extractor(Path(dest), skip)
    try:
        try:
            tr = TarReader(reader)
            for m in tr.members():
                ex.entry(tr, m)
            ex.finish()
            reader.drain()
        except ValueError as e:  # e.g. a NUL byte in a pax path
            raise _bad_tar(str(e)) from None
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _disk_full(dest) from None
            raise ImageError(f"cannot unpack layer into {dest}: {e}",
                             hint="the layer is malformed, or the filesystem refused an entry") from None  # fmt: skip
    finally:
        ex.close()
    return UnpackResult(reader.digest(), reader.n, ex.entries, ex.skipped)


def check_free_space(where: Path, need: int) -> None:
    try:
        st = os.statvfs(where)
    except OSError:
        return
    if st.f_bavail * st.f_frsize < need:
        raise _disk_full(where)


def unpack_file(path: Path | str, dest: Path | str, compression: str | None = None, *, max_bytes: int | None = None,
                skip: Callable[[Member], bool] | None = None) -> UnpackResult:  # fmt: skip
    """Extract the (possibly compressed) layer tar at `path` into `dest`; returns the DiffID etc."""
    dest = Path(dest)
    check_free_space(dest, os.path.getsize(path))
    with open_decompressed(Path(path), compression) as r:
        return extract(r, dest, max_bytes=max_bytes, skip=skip)


# --- the reverse: upper dir -> layer tar --------------------------------------------------------------


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def tar_from_dir(upper_dir: Path, out_path: Path) -> str:
    """Write the overlay upper dir `upper_dir` as an OCI layer tar at `out_path`; returns its DiffID.

    Deterministic: entries sorted, no atime/ctime, no user/group names. Overlay whiteouts (char 0/0)
    become `.wh.NAME`, opaque directories get a `.wh..wh..opq` entry. Never follows symlinks.
    """
    h = hashlib.sha256()

    class _HashFile:
        def __init__(self, f: BinaryIO) -> None:
            self.f = f

        def write(self, b: bytes) -> int:
            h.update(b)
            return self.f.write(b)

        def tell(self) -> int:
            return self.f.tell()

    seen: dict[tuple[int, int], str] = {}
    with open(out_path, "wb") as raw:
        hf = _HashFile(raw)
        with tarfile.open(fileobj=hf, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
            for dirpath, dirnames, filenames, dfd in os.fwalk(upper_dir, follow_symlinks=False):
                rel_dir = os.path.relpath(dirpath, upper_dir)
                rel_dir = "" if rel_dir == "." else rel_dir
                dirnames.sort()
                for name in sorted(dirnames + filenames):
                    _add_entry(tf, dfd, rel_dir, name, seen)
    return "sha256:" + h.hexdigest()


def _xattr_headers(fd: int) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        names = os.listxattr(fd)
    except OSError:
        return out
    for attr in sorted(names):
        if attr in SAFE_XATTRS or attr.startswith(SAFE_XATTR_PREFIXES):
            try:
                out["SCHILY.xattr." + attr] = os.getxattr(fd, attr).decode("utf-8", "surrogateescape")
            except OSError:
                pass
    return out


def _add_entry(tf: tarfile.TarFile, dfd: int, rel_dir: str, name: str, seen: dict[tuple[int, int], str]) -> None:
    st = os.lstat(name, dir_fd=dfd)
    path = f"{rel_dir}/{name}" if rel_dir else name
    ti = tarfile.TarInfo(path)
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.uname = ti.gname = ""
    ti.mtime = st.st_mtime_ns // 10**9
    if _is_whiteout(st):
        wh = tarfile.TarInfo(f"{rel_dir}/{WHITEOUT_PREFIX}{name}" if rel_dir else WHITEOUT_PREFIX + name)
        wh.mode, wh.uname, wh.gname, wh.mtime = 0o644, "", "", 0
        tf.addfile(wh)
        return
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:
            ti.type = tarfile.DIRTYPE
            ti.pax_headers = _xattr_headers(fd)
            try:
                opaque = os.getxattr(fd, OVERLAY_OPAQUE_XATTR) == b"y"
            except OSError:
                opaque = False
            try:
                os.getxattr(fd, "trusted.overlay.redirect")
                raise ImageError(f"cannot commit {path!r}: overlay redirect_dir is in use",
                                 hint="mount overlays with redirect_dir=off")  # fmt: skip
            except OSError:
                pass
        finally:
            os.close(fd)
        tf.addfile(ti)
        if opaque:
            op = tarfile.TarInfo(f"{path}/{OPAQUE_MARKER}")
            op.mode, op.uname, op.gname, op.mtime = 0o644, "", "", 0
            tf.addfile(op)
        return
    if stat.S_ISLNK(st.st_mode):
        ti.type = tarfile.SYMTYPE
        ti.linkname = os.readlink(name, dir_fd=dfd)
        tf.addfile(ti)
        return
    if stat.S_ISREG(st.st_mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in seen:
            ti.type = tarfile.LNKTYPE
            ti.linkname = seen[key]
            tf.addfile(ti)
            return
        if st.st_nlink > 1:
            seen[key] = path
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:
            try:
                os.getxattr(fd, "trusted.overlay.metacopy")
                raise ImageError(f"cannot commit {path!r}: overlay metacopy is in use",
                                 hint="mount overlays with metacopy=off")  # fmt: skip
            except OSError:
                pass
            ti.pax_headers = _xattr_headers(fd)
            ti.size = os.fstat(fd).st_size
            with os.fdopen(os.dup(fd), "rb") as f:
                tf.addfile(ti, f)
        finally:
            os.close(fd)
        return
    if stat.S_ISFIFO(st.st_mode):
        ti.type = tarfile.FIFOTYPE
        tf.addfile(ti)
        return
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        log.warning("not committing device node %s", path)
        return
    log.debug("not committing %s (socket or unknown type)", path)
