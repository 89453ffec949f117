"""Test helpers that make image content: a tiny busybox rootfs, and cached Debian rootfs tarballs.

`debian_rootfs_tar(suite)` runs the real mmdebstrap bootstrap once per machine and keeps the result
under /var/cache/devbox-test/ (rebuilt only when missing; delete the file to refresh it).
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import time
from pathlib import Path

CACHE_DIR = Path(os.environ.get("DEVBOX_TEST_CACHE", "/var/cache/devbox-test"))

BUSYBOX_APPLETS = [
    "sh", "ash", "ls", "cat", "echo", "sleep", "wget", "httpd", "id", "hostname", "ps", "true", "false", "env",
    "mkdir", "touch", "grep", "rm", "cp", "mv", "ln", "chmod", "chown", "head", "tail", "wc", "sed", "awk", "find",
    "kill", "mount", "umount", "ip", "ifconfig", "ping", "nc", "stat", "readlink", "pwd", "uname", "whoami",
    "test", "[", "printf", "date", "dd", "df", "du", "free", "top", "vi", "tr", "cut", "sort", "uniq", "xargs",
    "nslookup", "netstat", "pidof", "pgrep", "pkill", "seq", "tee", "yes", "basename", "dirname", "realpath",
    "su", "mktemp", "md5sum", "sha256sum", "tar", "gzip", "gunzip", "less", "more", "hexdump", "od", "watch",
    "nproc", "chroot", "mknod", "stty", "tty", "usleep", "timeout", "nohup", "setsid", "mkfifo", "cmp", "diff",
]  # fmt: skip

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def _busybox_binary() -> Path:
    for p in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.isfile(p):
            return Path(p)
    raise RuntimeError("busybox-static is not installed (apt-get install busybox-static)")


def make_busybox_rootfs_tar(path: Path) -> Path:
    """Write a tiny rootfs tar (gzip when `path` ends in .gz) built around Debian's static busybox."""
    path = Path(path)
    now = int(time.time())

    def add(tf: tarfile.TarFile, name: str, kind: bytes = tarfile.DIRTYPE, mode: int = 0o755,
            data: bytes | None = None, link: str = "") -> None:  # fmt: skip
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime, ti.uname, ti.gname = kind, mode, now, "root", "root"
        ti.linkname = link
        if data is not None:
            ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data) if data is not None else None)

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        add(tf, ".")
        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "run", "var",
                  "var/log", "var/www", "home"):  # fmt: skip
            add(tf, d)
        add(tf, "tmp", mode=0o1777)
        add(tf, "root", mode=0o700)
        add(tf, "bin/busybox", tarfile.REGTYPE, 0o755, _busybox_binary().read_bytes())
        for applet in BUSYBOX_APPLETS:
            add(tf, f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
        add(tf, "etc/passwd", tarfile.REGTYPE, 0o644, PASSWD.encode())
        add(tf, "etc/group", tarfile.REGTYPE, 0o644, GROUP.encode())
        add(tf, "etc/hostname", tarfile.REGTYPE, 0o644, b"busybox\n")
        add(tf, "etc/hosts", tarfile.REGTYPE, 0o644, b"127.0.0.1 localhost\n")
        add(tf, "var/www/index.html", tarfile.REGTYPE, 0o644, b"hello from busybox\n")
    data = raw.getvalue()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=1, mtime=0)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def debian_rootfs_tar(suite: str = "bookworm") -> Path:
    """The mmdebstrap rootfs of `suite` (gzipped tar), built once per machine under CACHE_DIR."""
    from devbox.runtime.image import bootstrap

    if not shutil.which("mmdebstrap"):
        raise RuntimeError("mmdebstrap is not installed (apt-get install mmdebstrap)")
    return bootstrap.cached_rootfs_tar(CACHE_DIR, suite)
