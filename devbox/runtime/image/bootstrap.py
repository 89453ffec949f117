"""Build `debian:SUITE` locally with mmdebstrap from the machine's own apt mirror.

Works where no registry is reachable. The rootfs tar comes from
`mmdebstrap --variant=minbase --include=python3,supervisor,... --skip=output/dev SUITE - MIRROR`
on stdout; devbox prepends an empty `./dev/` directory (the runtime mounts its own /dev, so no device
nodes are stored) and imports the stream as a one-layer image in one pass (`import_rootfs_stream`):
extracted into the layer directory and hashed (DiffID) as it arrives, while a child process gzips the
same bytes into the blob and hashes them. No tar file is written and nothing is read back.

DEVBOX_BOOTSTRAP_CACHE=DIR keeps the built tarball as DIR/debian-SUITE-<key>.tar.gz and reuses it (the
test suite and repeated bootstraps use this; that path writes the tarball first, then imports it);
DEVBOX_DEBIAN_MIRROR overrides the mirror.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import selectors
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path

from devbox.errors import ImageError
from devbox.log import log
from devbox.runtime.image import importer
from devbox.runtime.image.store import GZIP_LEVEL, OCI_LAYER_GZIP, Image, ImageStore

ENV_CACHE = "DEVBOX_BOOTSTRAP_CACHE"
ENV_MIRROR = "DEVBOX_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEFAULT_PACKAGES = ("python3", "supervisor", "ca-certificates", "procps", "iproute2", "netbase")
KNOWN_SUITES = ("buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid", "unstable",
                "testing", "stable", "oldstable")  # fmt: skip
_SUITE_RE = re.compile(r"^[a-z][a-z0-9-]{1,30}$")
_PKG_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(?::[a-z0-9]+)?(?:=[A-Za-z0-9.+~:-]+)?$")


def is_bootstrappable(suite: str) -> bool:
    return suite in KNOWN_SUITES


def _sources_entries() -> list[dict[str, list[str]]]:
    """`deb` entries of /etc/apt/sources.list{,.d/*.list,.d/*.sources} as {uris, suites, signed_by}."""
    out: list[dict[str, list[str]]] = []
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    for path in files:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if not line.startswith("deb "):
                continue
            opts: list[str] = []
            rest = line[4:].strip()
            if rest.startswith("["):
                inner, _, rest = rest[1:].partition("]")
                opts = inner.split()
            parts = rest.split()
            if len(parts) < 2:
                continue
            signed = [o.split("=", 1)[1] for o in opts if o.startswith("signed-by=")]
            out.append({"uris": [parts[0]], "suites": [parts[1]], "signed_by": signed})
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                k, _, v = line.partition(":")
                fields[k.strip().lower()] = v.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                continue
            out.append({"uris": fields.get("uris", "").split(), "suites": fields.get("suites", "").split(),
                        "signed_by": fields.get("signed-by", "").split()[:1]})  # fmt: skip
    return out


def find_mirror() -> tuple[str, str]:
    """(mirror URI, keyring path) from the machine's apt sources (the first Debian main archive)."""
    keyring = DEFAULT_KEYRING
    env = os.environ.get(ENV_MIRROR)
    if env:
        return env.rstrip("/"), keyring
    for e in _sources_entries():
        suites = e["suites"]
        if not suites or all(re.search(r"-(security|updates|backports)$|/", s) for s in suites):
            continue
        for uri in e["uris"]:
            if "security" in uri or not re.match(r"^https?://", uri):
                continue
            if not any(s.split("-")[0] in KNOWN_SUITES for s in suites):
                continue
            kr = e["signed_by"][0] if e["signed_by"] and os.path.isfile(e["signed_by"][0]) else keyring
            if not kr.endswith(".gpg"):
                kr = keyring
            return uri.rstrip("/"), kr
    return DEFAULT_MIRROR, keyring


def _check_suite(mirror: str, suite: str) -> None:
    url = f"{mirror}/dists/{suite}/Release"
    try:
        req = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(req, timeout=15):
            pass
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise ImageError(f"unknown Debian suite {suite!r}: {mirror} has no dists/{suite}",
                             hint="use a codename such as bookworm or trixie") from None  # fmt: skip
        raise ImageError(f"Debian mirror {mirror} answered HTTP {e.code} for {suite}",
                         hint=f"check the mirror or set {ENV_MIRROR}") from None  # fmt: skip
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ImageError(f"cannot reach the Debian mirror {mirror}: {reason}",
                         hint=f"check the network, or set {ENV_MIRROR} to a reachable mirror") from None  # fmt: skip


def mmdebstrap_argv(suite: str, packages: list[str], mirror: str, keyring: str) -> list[str]:
    return ["mmdebstrap", "--variant=minbase", f"--include={','.join(packages)}",
            f"--keyring={keyring}", "--skip=output/dev", "--format=tar", suite, "-", mirror]  # fmt: skip


def _package_list(extra: tuple[str, ...] | list[str]) -> list[str]:
    pkgs: list[str] = []
    for p in list(DEFAULT_PACKAGES) + [x.strip() for x in extra if x.strip()]:
        if not _PKG_RE.match(p):
            raise ImageError(f"invalid Debian package name {p!r}", hint="use names like openjdk-17-jre-headless")
        if p not in pkgs:
            pkgs.append(p)
    return pkgs


def _dev_dir_header() -> bytes:
    ti = tarfile.TarInfo("./dev")
    ti.type, ti.mode, ti.mtime, ti.uname, ti.gname = tarfile.DIRTYPE, 0o755, int(time.time()), "root", "root"
    return ti.tobuf(format=tarfile.GNU_FORMAT)


def _mmdebstrap_error(rc: int, tail: list[str], mirror: str, suite: str) -> ImageError:
    """One-line error from mmdebstrap's last `E:` line (or its last line, or its exit status)."""
    errs = [x for x in tail if x.startswith("E:")] or [x for x in tail if x.strip()] or [f"exit status {rc}"]
    msg = errs[-1].strip()
    if any(k in " ".join(tail) for k in ("Temporary failure resolving", "Could not resolve",
                                         "Failed to fetch", "Connection failed")):  # fmt: skip
        return ImageError(f"mmdebstrap could not download from {mirror}: {msg}",
                          hint=f"check the network, or set {ENV_MIRROR} to a reachable mirror")  # fmt: skip
    return ImageError(f"mmdebstrap failed for {suite}: {msg}",
                      hint="see its output above; a package name may be wrong")  # fmt: skip


def build_rootfs_tar(suite: str, out: Path, packages: tuple[str, ...] | list[str] = ()) -> str:
    """Run mmdebstrap and write a gzipped rootfs tar to `out`; returns its DiffID (uncompressed sha256).

    Progress lines from mmdebstrap go to stderr as they come.
    """
    if not shutil.which("mmdebstrap"):
        raise ImageError("mmdebstrap is not installed", hint="apt-get install mmdebstrap")
    if not _SUITE_RE.match(suite):
        raise ImageError(f"invalid Debian suite {suite!r}", hint="use a codename such as bookworm or trixie")
    mirror, keyring = find_mirror()
    _check_suite(mirror, suite)
    argv = mmdebstrap_argv(suite, _package_list(packages), mirror, keyring)
    log.info("+ %s", " ".join(argv))
    out = Path(out)
    part = out.with_name(out.name + f".part-{os.getpid()}")
    h = hashlib.sha256()
    comp = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    tail: list[str] = []
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        with open(part, "wb") as f:
            head = _dev_dir_header()
            h.update(head)
            f.write(comp.compress(head))
            sel = selectors.DefaultSelector()
            sel.register(proc.stdout, selectors.EVENT_READ, "out")
            sel.register(proc.stderr, selectors.EVENT_READ, "err")
            errbuf = b""
            open_streams = 2
            while open_streams:
                for key, _ in sel.select():
                    data = os.read(key.fileobj.fileno(), 1 << 20)  # type: ignore[union-attr]
                    if not data:
                        sel.unregister(key.fileobj)
                        open_streams -= 1
                        continue
                    if key.data == "out":
                        h.update(data)
                        f.write(comp.compress(data))
                    else:
                        errbuf += data
                        *lines, errbuf = errbuf.split(b"\n")
                        for raw in lines:
                            line = raw.decode(errors="replace")
                            print(line, file=sys.stderr, flush=True)
                            tail = (tail + [line])[-30:]
            f.write(comp.flush())
        rc = proc.wait()
        if rc != 0:
            raise _mmdebstrap_error(rc, tail, mirror, suite)
        os.rename(part, out)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        part.unlink(missing_ok=True)
        raise
    return "sha256:" + h.hexdigest()


def cache_path(cache_dir: Path, suite: str, packages: tuple[str, ...] | list[str] = ()) -> Path:
    key = hashlib.sha256(",".join(sorted(_package_list(packages))).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"debian-{suite}-{key}.tar.gz"


def cached_rootfs_tar(cache_dir: Path, suite: str, packages: tuple[str, ...] | list[str] = ()) -> Path:
    """The cached rootfs tarball for (suite, packages), built once when missing."""
    from devbox import fsutil

    p = cache_path(cache_dir, suite, packages)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        with fsutil.locked(p.with_name(f".{p.name}.lock")):  # concurrent test sessions build it once
            for part in p.parent.glob(f"{p.name}.part-*"):  # left by a killed build
                if not os.path.exists(f"/proc/{part.name.rsplit('-', 1)[-1]}"):
                    part.unlink(missing_ok=True)
            if not p.exists():
                try:
                    build_rootfs_tar(suite, p, packages)
                except BaseException:
                    p.with_name(f".{p.name}.lock").unlink(missing_ok=True)  # e.g. an unknown suite
                    raise
    return p


def bootstrap_debian(store: ImageStore, suite: str, ref: str | None = None,
                     packages: tuple[str, ...] | list[str] = ()) -> Image:  # fmt: skip
    """Build `debian:SUITE` with mmdebstrap and import it as a one-layer image tagged `ref`."""
    _package_list(packages)  # validate before any work
    cache = os.environ.get(ENV_CACHE)
    with store.transaction():
        if cache:
            return import_bootstrap_tar(store, cached_rootfs_tar(Path(cache), suite, packages), suite, ref, packages)
        if not shutil.which("mmdebstrap"):
            raise ImageError("mmdebstrap is not installed", hint="apt-get install mmdebstrap")
        if not _SUITE_RE.match(suite):
            raise ImageError(f"invalid Debian suite {suite!r}", hint="use a codename such as bookworm or trixie")
        mirror, keyring = find_mirror()
        argv = mmdebstrap_argv(suite, _package_list(packages), mirror, keyring)
        # the suite check (one HEAD request, ~0.35 s) runs while mmdebstrap starts up
        return import_rootfs_stream(store, argv, suite, ref, mirror=mirror,
                                    precheck=lambda: _check_suite(mirror, suite))  # fmt: skip


# One pass from mmdebstrap's stdout to a registered image: the parent reads the tar stream, hashes it
# (the DiffID) and extracts it into a scratch layer dir while a child gzips the same bytes (isal when
# installed) into the blob file and hashes the gzip (the blob digest). Nothing is written twice or read
# back. Only when mmdebstrap exited 0, the tar ended cleanly and the gzip child succeeded are the blob
# and the layer dir renamed into place and the image written; on any failure both are removed.
_GZIP_CHILD = r"""
import hashlib, os, sys
if len(sys.argv) > 3:
    sys.path.insert(0, sys.argv[3])
    from isal import isal_zlib as zlib
else:
    import zlib
level = int(sys.argv[2])
if zlib.__name__.startswith("isal"):
    level = min(level, 3)
out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
c = zlib.compressobj(level, zlib.DEFLATED, 31)
h = hashlib.sha256()
n = 0
def w(b):
    global n
    if b:
        h.update(b)
        n += len(b)
        mv = memoryview(b)
        while mv:
            mv = mv[os.write(out, mv):]
fi = sys.stdin.fileno()
while True:
    b = os.read(fi, 1 << 20)
    if not b:
        break
    w(c.compress(b))
w(c.flush())
os.close(out)
sys.stdout.write("sha256:%s %d\n" % (h.hexdigest(), n))
"""


class _TeeReader:
    """Reads the tar from the producer's stdout (the ./dev header first), passes every byte on to the
    gzip child, and relays the producer's stderr lines (kept in `tail`) while waiting for data."""

    def __init__(self, proc: subprocess.Popen[bytes], gz_in: int, head: bytes) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc, self.gz_in = proc, gz_in
        self.out_fd, self.err_fd = proc.stdout.fileno(), proc.stderr.fileno()
        self.pending = head
        self.tail: list[str] = []
        self.errbuf = b""
        self.eof = False
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.out_fd, selectors.EVENT_READ, "out")
        self.sel.register(self.err_fd, selectors.EVENT_READ, "err")
        self.err_open = True

    def _relay(self, data: bytes) -> None:
        if not data:
            self.sel.unregister(self.err_fd)
            self.err_open = False
            data, self.errbuf = self.errbuf + b"\n", b""
        self.errbuf += data
        *lines, self.errbuf = self.errbuf.split(b"\n")
        for raw in lines:
            if not raw:
                continue
            line = raw.decode(errors="replace")
            print(line, file=sys.stderr, flush=True)
            self.tail = (self.tail + [line])[-30:]

    def read(self, n: int) -> bytes:
        if self.pending:
            b, self.pending = self.pending, b""
        elif self.eof:
            return b""
        else:
            b = b""
            while not b:
                for key, _ in self.sel.select():
                    if key.data == "err":
                        self._relay(os.read(self.err_fd, 1 << 16))
                        continue
                    b = os.read(self.out_fd, max(n, 1 << 16))
                    if not b:
                        self.eof = True
                        return b""
                    break
        mv = memoryview(b)
        while mv:
            mv = mv[os.write(self.gz_in, mv) :]
        return b

    def finish_stderr(self) -> None:
        while self.err_open:
            self._relay(os.read(self.err_fd, 1 << 16))

    def close(self) -> None:
        self.sel.close()


def import_rootfs_stream(store: ImageStore, argv: list[str], suite: str, ref: str | None = None, *,
                         mirror: str = "", created_by: str | None = None,
                         precheck: Callable[[], None] | None = None) -> Image:  # fmt: skip
    """Run `argv` (mmdebstrap writing a rootfs tar to stdout) and import its output as a one-layer
    image `ref` (default debian:SUITE) in one pass: extract, DiffID and gzip blob at the same time.

    `precheck` runs once `argv` has started; when it raises, the producer is killed and nothing is kept."""
    from devbox.runtime.image import unpack

    log.info("+ %s", " ".join(argv))
    with store.transaction():
        layer_tmp = Path(store.temp_dir("layer"))
        blob_tmp = Path(store.temp_path("blob"))
        gz_argv = [sys.executable, "-I", "-S", "-c", _GZIP_CHILD, os.fspath(blob_tmp), str(GZIP_LEVEL)]
        gz_argv += unpack._isal_path()
        gz = proc = None
        try:
            gz = subprocess.Popen(gz_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  close_fds=True)  # fmt: skip
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    close_fds=True)  # fmt: skip
            assert gz.stdin is not None and gz.stdout is not None and proc.stdout is not None
            try:
                import fcntl

                for fd in (proc.stdout.fileno(), gz.stdin.fileno()):  # F_SETPIPE_SZ: fewer waits, bigger reads
                    fcntl.fcntl(fd, 1031, 1 << 20)
            except OSError:
                pass
            if precheck is not None:
                precheck()
            tee = _TeeReader(proc, gz.stdin.fileno(), _dev_dir_header())
            t0 = time.monotonic()
            try:
                try:
                    res = unpack.extract(tee, layer_tmp)
                except ImageError:
                    # a stream cut short because the producer failed: report the producer's error
                    if tee.eof or proc.poll() is not None:
                        tee.finish_stderr()
                        rc = proc.wait()
                        if rc != 0:
                            raise _mmdebstrap_error(rc, tee.tail, mirror, suite) from None
                    raise
                tee.finish_stderr()
                rc = proc.wait()
            finally:
                tee.close()
            if rc != 0:
                raise _mmdebstrap_error(rc, tee.tail, mirror, suite)
            gz.stdin.close()
            out, err = gz.stdout.read(), (gz.stderr.read() if gz.stderr else b"")
            if gz.wait() != 0 or not out.startswith(b"sha256:"):
                last = (err.decode(errors="replace").strip().splitlines() or [f"exit status {gz.returncode}"])[-1]
                raise ImageError(f"cannot compress the bootstrapped rootfs: {last}",
                                 hint="check free space in the state root")  # fmt: skip
            blob, size_s = out.decode().split()
            log.debug("bootstrap stream: %d entries, %d bytes, %s gzip bytes, extracted in %.2fs after the first byte",
                      res.entries, res.size, size_s, time.monotonic() - t0)  # fmt: skip
            dst = Path(store.blob_path(blob))
            if dst.exists():
                blob_tmp.unlink()
            else:
                os.rename(blob_tmp, dst)
            store._register_layer(layer_tmp, res.diff_id)
        except BaseException:
            for p in (proc, gz):
                if p is not None and p.poll() is None:
                    p.kill()
                if p is not None:
                    p.wait()
            from devbox.runtime.image.store import _remove_path

            _remove_path(layer_tmp)
            _remove_path(blob_tmp)
            raise
        finally:
            for p in (proc, gz):
                for f in (p.stdin, p.stdout, p.stderr) if p is not None else ():
                    if f is not None:
                        f.close()
        config = importer.default_config([res.diff_id], created_by=created_by or " ".join(argv),
                                         comment=f"devbox image bootstrap debian:{suite}",
                                         labels={"io.devbox.bootstrap": f"debian:{suite}"}, cmd=["bash"])  # fmt: skip
        layer = {"mediaType": OCI_LAYER_GZIP, "digest": blob, "size": int(size_s)}
        return store.write_image(config, [layer], ref or f"debian:{suite}")


def import_bootstrap_tar(store: ImageStore, tar: Path, suite: str, ref: str | None = None,
                         packages: tuple[str, ...] | list[str] = ()) -> Image:  # fmt: skip
    """Import a rootfs tarball made by `build_rootfs_tar` as `debian:SUITE` with the bootstrap config."""
    pkgs = _package_list(packages)
    mirror, keyring = find_mirror()
    created_by = " ".join(mmdebstrap_argv(suite, pkgs, mirror, keyring))
    with store.transaction():
        blob = store.put_blob_file(tar)  # moved when under tmp/, copied otherwise (the cache stays)
        size = Path(store.blob_path(blob)).stat().st_size
        diff_id = store.unpack_layer(blob, OCI_LAYER_GZIP, None)
        config = importer.default_config([diff_id], created_by=created_by, cmd=["bash"],
                                         comment=f"devbox image bootstrap debian:{suite}",
                                         labels={"io.devbox.bootstrap": f"debian:{suite}"})  # fmt: skip
        layer = {"mediaType": OCI_LAYER_GZIP, "digest": blob, "size": size}
        return store.write_image(config, [layer], ref or f"debian:{suite}")
