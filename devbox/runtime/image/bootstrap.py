"""Build `debian:SUITE` locally with mmdebstrap from the machine's own apt mirror.

Works where no registry is reachable. The rootfs tar comes from
`mmdebstrap --variant=minbase --include=python3,supervisor,... --skip=output/dev SUITE - MIRROR`
on stdout; devbox prepends an empty `./dev/` directory (the runtime mounts its own /dev, so no device
nodes are stored), gzips it while hashing, and imports it as a one-layer image.

DEVBOX_BOOTSTRAP_CACHE=DIR keeps the built tarball as DIR/debian-SUITE-<key>.tar.gz and reuses it (the
test suite and repeated bootstraps use this); DEVBOX_DEBIAN_MIRROR overrides the mirror.
"""

from __future__ import annotations

import glob
import hashlib
import logging
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
from pathlib import Path

from devbox.errors import ImageError
from devbox.runtime.image import importer
from devbox.runtime.image.store import GZIP_LEVEL, OCI_LAYER_GZIP, Image, ImageStore

log = logging.getLogger(__name__)

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
            errs = [x for x in tail if x.startswith("E:")] or tail or [f"exit status {rc}"]
            msg = errs[-1]
            if any(k in " ".join(tail) for k in ("Temporary failure resolving", "Could not resolve",
                                                 "Failed to fetch", "Connection failed")):  # fmt: skip
                raise ImageError(f"mmdebstrap could not download from {mirror}: {msg}",
                                 hint=f"check the network, or set {ENV_MIRROR} to a reachable mirror")  # fmt: skip
            raise ImageError(f"mmdebstrap failed for {suite}: {msg}",
                             hint="see its output above; a package name may be wrong")  # fmt: skip
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
        tar = store.temp_path("bootstrap")
        try:
            build_rootfs_tar(suite, tar, packages)
            return import_bootstrap_tar(store, tar, suite, ref, packages)
        finally:
            tar.unlink(missing_ok=True)


def import_bootstrap_tar(store: ImageStore, tar: Path, suite: str, ref: str | None = None,
                         packages: tuple[str, ...] | list[str] = ()) -> Image:  # fmt: skip
    """Import a rootfs tarball made by `build_rootfs_tar` as `debian:SUITE` with the bootstrap config."""
    pkgs = _package_list(packages)
    mirror, keyring = find_mirror()
    created_by = " ".join(mmdebstrap_argv(suite, pkgs, mirror, keyring))
    with store.transaction():
        blob = store.put_blob_file(tar)  # moved when under tmp/, copied otherwise (the cache stays)
        size = store.blob_path(blob).stat().st_size
        diff_id = store.unpack_layer(blob, OCI_LAYER_GZIP, None)
        config = importer.default_config([diff_id], created_by=created_by, cmd=["bash"],
                                         comment=f"devbox image bootstrap debian:{suite}",
                                         labels={"io.devbox.bootstrap": f"debian:{suite}"})  # fmt: skip
        layer = {"mediaType": OCI_LAYER_GZIP, "digest": blob, "size": size}
        return store.write_image(config, [layer], ref or f"debian:{suite}")
