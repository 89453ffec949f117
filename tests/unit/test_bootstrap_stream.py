"""The one-pass bootstrap import (bootstrap.import_rootfs_stream): mmdebstrap's stdout is extracted,
hashed and gzipped in one pass. A fake producer (`sh -c 'cat TAR'`) stands in for mmdebstrap."""

from __future__ import annotations

import gzip
import hashlib
import os
import shlex
import stat
import sys
import tarfile
from pathlib import Path

import pytest
from test_unpack import entry, make_tar

from devbox.errors import ImageError, ImageNotFound
from devbox.runtime.image import bootstrap, unpack
from devbox.runtime.image.store import OCI_LAYER_GZIP, ImageStore

DEV_HEADER = b""


@pytest.fixture(autouse=True)
def _fixed_dev_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ./dev entry devbox prepends carries the current time; pin it so digests can be predicted."""
    global DEV_HEADER
    ti = tarfile.TarInfo("./dev")
    ti.type, ti.mode, ti.mtime, ti.uname, ti.gname = tarfile.DIRTYPE, 0o755, 1_600_000_000, "root", "root"
    DEV_HEADER = ti.tobuf(format=tarfile.GNU_FORMAT)
    monkeypatch.setattr(bootstrap, "_dev_dir_header", lambda: DEV_HEADER)


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "state")


def rootfs_tar() -> bytes:
    big = os.urandom(3 << 20)  # several pipe buffers and read chunks
    return make_tar([
        entry("./", tarfile.DIRTYPE, mode=0o755),
        entry("./etc", tarfile.DIRTYPE, mode=0o755),
        entry("./etc/os-release", data=b"VERSION_CODENAME=bookworm\n"),
        entry("./usr", tarfile.DIRTYPE, mode=0o755),
        entry("./usr/bin", tarfile.DIRTYPE, mode=0o755),
        entry("./usr/bin/python3", data=big, mode=0o755),
        entry("./usr/bin/su", data=b"#!su\n", mode=0o4755),
        entry("./usr/bin/py", tarfile.SYMTYPE, mode=0o777, link="python3"),
        entry("./usr/bin/python3.11", tarfile.LNKTYPE, link="./usr/bin/python3"),
    ])  # fmt: skip


def producer(tmp_path: Path, data: bytes, script: str = 'cat "$0"') -> list[str]:
    src = tmp_path / "rootfs.tar"
    src.write_bytes(data)
    return ["sh", "-c", script, str(src)]


def tree(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = os.lstat(p)
            body = p.read_bytes() if stat.S_ISREG(st.st_mode) else os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_nlink, body)
    return out


def assert_nothing_left(store: ImageStore) -> None:
    assert store.list() == []
    assert os.listdir(store.layers) == []
    assert os.listdir(store.blobs) == []
    assert os.listdir(store.tmp) == []


def test_one_pass_matches_a_separate_tar(store: ImageStore, tmp_path: Path) -> None:
    data = rootfs_tar()
    img = bootstrap.import_rootfs_stream(store, producer(tmp_path, data), "bookworm", "debian:bookworm")
    full = DEV_HEADER + data
    # the DiffID is the sha256 of exactly the tar mmdebstrap wrote, with the ./dev entry in front
    assert img.diff_ids == ["sha256:" + hashlib.sha256(full).hexdigest()]
    layer = img.layers[0]
    assert layer["mediaType"] == OCI_LAYER_GZIP
    blob = Path(store.blob_path(layer["digest"])).read_bytes()
    assert layer["digest"] == "sha256:" + hashlib.sha256(blob).hexdigest() and layer["size"] == len(blob)
    assert gzip.decompress(blob) == full
    # the same tar imported the old way (file -> unpack) gives the same DiffID and the same tree
    sep = tmp_path / "separate.tar"
    sep.write_bytes(full)
    dest = tmp_path / "separate"
    dest.mkdir()
    res = unpack.unpack_file(sep, dest)
    assert res.diff_id == img.diff_ids[0]
    got = Path(store.layer_dirs(img)[0])
    assert tree(got) == tree(dest)
    assert (got / "dev").is_dir() and os.listdir(got / "dev") == []
    assert os.stat(got / "usr/bin/su").st_mode & 0o4000
    assert img.ref == "debian:bookworm" and img.config["config"]["Cmd"] == ["bash"]
    assert img.config["history"][0]["created_by"].startswith("sh -c")
    assert store.resolve("debian:bookworm").digest == img.digest
    assert os.listdir(store.tmp) == []


def test_failed_producer_leaves_nothing_and_one_line_error(store: ImageStore, tmp_path: Path) -> None:
    # mmdebstrap dies half-way through its tar: the stream is cut inside a file
    data = rootfs_tar()
    argv = producer(tmp_path, data, 'head -c 2000000 "$0"; echo "I: downloading..." >&2; '
                                    'echo "E: apt-get download failed" >&2; echo "cleaning up" >&2; exit 1')
    with pytest.raises(ImageError) as ei:
        bootstrap.import_rootfs_stream(store, argv, "bookworm", "debian:bookworm")
    msg = ei.value.message
    assert "mmdebstrap failed for bookworm: E: apt-get download failed" in msg and "\n" not in msg
    with pytest.raises(ImageNotFound):
        store.resolve("debian:bookworm")
    assert_nothing_left(store)


def test_producer_fails_before_any_output(store: ImageStore, tmp_path: Path) -> None:
    argv = ["sh", "-c", "echo 'E: Temporary failure resolving deb.debian.org' >&2; exit 25"]
    with pytest.raises(ImageError) as ei:
        bootstrap.import_rootfs_stream(store, argv, "bookworm", mirror="http://deb.example")
    assert "could not download from http://deb.example" in str(ei.value)
    assert_nothing_left(store)


def test_truncated_stream_with_exit_0_is_refused(store: ImageStore, tmp_path: Path) -> None:
    argv = producer(tmp_path, rootfs_tar(), 'head -c 1500000 "$0"')
    with pytest.raises(ImageError) as ei:
        bootstrap.import_rootfs_stream(store, argv, "bookworm")
    assert "truncated" in str(ei.value) and "\n" not in str(ei.value)
    assert_nothing_left(store)


def test_hostile_entry_in_the_stream_is_refused(store: ImageStore, tmp_path: Path) -> None:
    evil = make_tar([entry("etc", tarfile.SYMTYPE, mode=0o777, link="/etc"), entry("etc/passwd", data=b"x")])
    with pytest.raises(ImageError):
        bootstrap.import_rootfs_stream(store, producer(tmp_path, evil), "bookworm")
    assert_nothing_left(store)


def test_chatty_stderr_does_not_block_the_stream(store: ImageStore, tmp_path: Path,
                                                 capfd: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """mmdebstrap writes progress to stderr while the tar flows: both pipes are drained."""
    data = rootfs_tar()
    src = tmp_path / "rootfs.tar"
    src.write_bytes(data)
    code = ("import sys\n"
            "for i in range(3000): sys.stderr.write('I: progress line %d\\n' % i)\n"
            f"sys.stdout.buffer.write(open({str(src)!r}, 'rb').read())\n"
            "for i in range(3000): sys.stderr.write('I: more %d\\n' % i)\n")  # fmt: skip
    img = bootstrap.import_rootfs_stream(store, [sys.executable, "-c", code], "bookworm", "x:1",
                                         created_by="fake mmdebstrap")  # fmt: skip
    assert img.diff_ids == ["sha256:" + hashlib.sha256(DEV_HEADER + data).hexdigest()]
    assert img.config["history"][0]["created_by"] == "fake mmdebstrap"
    err = capfd.readouterr().err
    assert "I: progress line 2999" in err and "I: more 2999" in err


def test_bootstrap_debian_streams_mmdebstrap(store: ImageStore, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Without a bootstrap cache, bootstrap_debian runs mmdebstrap_argv and imports its stdout."""
    data = rootfs_tar()
    src = tmp_path / "rootfs.tar"
    src.write_bytes(data)
    seen: list[list[str]] = []

    def fake_argv(suite: str, packages: list[str], mirror: str, keyring: str) -> list[str]:
        seen.append([suite, *packages])
        return ["sh", "-c", f"cat {shlex.quote(str(src))}"]

    monkeypatch.delenv(bootstrap.ENV_CACHE, raising=False)
    monkeypatch.setattr(bootstrap, "mmdebstrap_argv", fake_argv)
    monkeypatch.setattr(bootstrap, "_check_suite", lambda mirror, suite: None)
    monkeypatch.setattr(bootstrap.shutil, "which", lambda name: "/usr/bin/" + name)
    img = bootstrap.bootstrap_debian(store, "bookworm", ref="debian:bookworm-x", packages=("redis-server",))
    assert seen == [["bookworm", *bootstrap.DEFAULT_PACKAGES, "redis-server"]]
    assert img.ref == "debian:bookworm-x"
    assert (Path(store.layer_dirs(img)[0]) / "etc/os-release").read_text() == "VERSION_CODENAME=bookworm\n"
    assert img.config["config"]["Labels"] == {"io.devbox.bootstrap": "debian:bookworm"}


def test_failed_precheck_kills_the_producer(store: ImageStore, tmp_path: Path) -> None:
    """The suite check runs while mmdebstrap starts; when it fails, mmdebstrap is stopped."""
    pidfile = tmp_path / "pid"
    argv = ["sh", "-c", f'echo $$ > {shlex.quote(str(pidfile))}; exec sleep 30']

    def precheck() -> None:
        for _ in range(200):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            import time

            time.sleep(0.01)
        raise ImageError("unknown Debian suite 'nosuch': http://deb.example has no dists/nosuch")

    with pytest.raises(ImageError, match="unknown Debian suite"):
        bootstrap.import_rootfs_stream(store, argv, "nosuch", precheck=precheck)
    pid = int(pidfile.read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert_nothing_left(store)
