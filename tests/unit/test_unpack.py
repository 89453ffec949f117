"""Layer extraction of well-formed tars, and the reverse (upper dir -> layer tar)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from devbox.runtime.image import unpack

pytestmark = pytest.mark.root  # ownership, whiteouts (mknod) and trusted.* xattrs need root


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644, link: str = "",
          uid: int = 0, gid: int = 0, mtime: int = 1_600_000_000, dev: tuple[int, int] = (0, 0),
          pax: dict[str, str] | None = None) -> tuple[tarfile.TarInfo, bytes]:  # fmt: skip
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.linkname, ti.uid, ti.gid, ti.mtime = kind, mode, link, uid, gid, mtime
    ti.devmajor, ti.devminor = dev
    if kind == tarfile.REGTYPE:
        ti.size = len(data)
    if pax:
        ti.pax_headers = dict(pax)
    return ti, data


def make_tar(entries: list[tuple[tarfile.TarInfo, bytes]], compress: bool = False) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if ti.type == tarfile.REGTYPE else None)
    b = raw.getvalue()
    return gzip.compress(b, mtime=0) if compress else b


def extract_bytes(tmp_path: Path, data: bytes) -> tuple[Path, unpack.UnpackResult]:
    src = tmp_path / "layer.tar"
    src.write_bytes(data)
    dest = tmp_path / "dest"
    dest.mkdir()
    return dest, unpack.unpack_file(src, dest)


def test_files_dirs_links_modes(tmp_path: Path) -> None:
    tar = make_tar([
        entry("./", tarfile.DIRTYPE, mode=0o755),
        entry("etc", tarfile.DIRTYPE, mode=0o755, mtime=1_500_000_000),
        entry("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n", mode=0o644),
        entry("etc/shadow", data=b"secret\n", mode=0o640, gid=42),
        entry("usr/bin/su", data=b"\x7fELF", mode=0o4755),  # parents created implicitly
        entry("usr/bin/wall", data=b"x", mode=0o2755, gid=5),
        entry("usr/bin/sh", tarfile.SYMTYPE, link="/bin/busybox", mode=0o777),
        entry("usr/bin/su2", tarfile.LNKTYPE, link="usr/bin/su"),
        entry("home/user", tarfile.DIRTYPE, mode=0o700, uid=1000, gid=1000),
        entry("home/user/f", data=b"hi", uid=1000, gid=1000, mtime=1_234_567_890),
        entry("run/fifo", tarfile.FIFOTYPE, mode=0o600),
        entry("tmp", tarfile.DIRTYPE, mode=0o1777),
        entry("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),  # skipped: the runtime mounts /dev
    ], compress=True)  # fmt: skip
    dest, res = extract_bytes(tmp_path, tar)
    assert res.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(tar)).hexdigest()
    assert res.skipped == 1
    assert (dest / "etc/passwd").read_bytes() == b"root:x:0:0::/root:/bin/sh\n"
    st = os.lstat(dest / "etc/shadow")
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == 42
    assert stat.S_IMODE(os.lstat(dest / "usr/bin/su").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(dest / "usr/bin/wall").st_mode) == 0o2755
    assert os.readlink(dest / "usr/bin/sh") == "/bin/busybox"
    assert os.lstat(dest / "usr/bin/su2").st_ino == os.lstat(dest / "usr/bin/su").st_ino
    st = os.lstat(dest / "home/user")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o700)
    assert os.lstat(dest / "home/user/f").st_mtime == 1_234_567_890
    assert os.lstat(dest / "etc").st_mtime == 1_500_000_000  # dir times are set after their content
    assert stat.S_ISFIFO(os.lstat(dest / "run/fifo").st_mode)
    assert stat.S_IMODE(os.lstat(dest / "tmp").st_mode) == 0o1777
    assert not (dest / "dev/null").exists()


def test_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    tar = make_tar([
        entry("etc", tarfile.DIRTYPE),
        entry("etc/.wh.motd"),
        entry("var/cache", tarfile.DIRTYPE),
        entry("var/cache/.wh..wh..opq"),
        entry("var/cache/new", data=b"n"),
        entry(".wh..wh.plnk", tarfile.DIRTYPE),  # aufs leftovers are ignored
    ])  # fmt: skip
    dest, _ = extract_bytes(tmp_path, tar)
    st = os.lstat(dest / "etc/motd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert not (dest / "etc/.wh.motd").exists()
    assert os.getxattr(dest / "var/cache", "trusted.overlay.opaque") == b"y"
    assert not (dest / "var/cache/.wh..wh..opq").exists()
    assert (dest / "var/cache/new").read_bytes() == b"n"


def test_xattrs_safe_ones_kept(tmp_path: Path) -> None:
    cap = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    tar = make_tar([
        entry("ping", data=b"x", mode=0o755, pax={"SCHILY.xattr.security.capability": cap,
                                                  "SCHILY.xattr.trusted.overlay.redirect": "/etc",
                                                  "SCHILY.xattr.user.note": "hello"}),
    ])  # fmt: skip
    dest, _ = extract_bytes(tmp_path, tar)
    names = os.listxattr(dest / "ping")
    assert "security.capability" in names
    assert "trusted.overlay.redirect" not in names
    assert os.getxattr(dest / "ping", "user.note") == b"hello"


def test_later_entries_replace_earlier(tmp_path: Path) -> None:
    tar = make_tar([
        entry("a", data=b"one"),
        entry("a", data=b"two"),
        entry("d", tarfile.DIRTYPE),
        entry("d/x", data=b"x"),
        entry("d", tarfile.SYMTYPE, link="elsewhere"),  # a dir replaced by a symlink
        entry("l", tarfile.SYMTYPE, link="/etc/passwd"),
        entry("l", data=b"plain file now"),
    ])  # fmt: skip
    dest, _ = extract_bytes(tmp_path, tar)
    assert (dest / "a").read_bytes() == b"two"
    assert os.readlink(dest / "d") == "elsewhere"
    assert (dest / "l").read_bytes() == b"plain file now" and not (dest / "l").is_symlink()


def test_tar_from_dir_round_trip(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/conf").write_text("c")
    os.chmod(upper / "etc/conf", 0o600)
    os.link(upper / "etc/conf", upper / "etc/conf2")
    os.symlink("conf", upper / "etc/link")
    os.mknod(upper / "etc/gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))  # overlay whiteout
    (upper / "opq").mkdir()
    os.setxattr(upper / "opq", "trusted.overlay.opaque", b"y")
    (upper / "opq/inside").write_text("i")
    out1, out2 = tmp_path / "l1.tar", tmp_path / "l2.tar"
    d1 = unpack.tar_from_dir(upper, out1)
    d2 = unpack.tar_from_dir(upper, out2)
    assert d1 == d2 and out1.read_bytes() == out2.read_bytes()  # deterministic
    assert d1 == "sha256:" + hashlib.sha256(out1.read_bytes()).hexdigest()
    with tarfile.open(out1) as tf:
        names = tf.getnames()
        assert "etc/.wh.gone" in names and "opq/.wh..wh..opq" in names and "etc/gone" not in names
        assert tf.getmember("etc/conf2").islnk() or tf.getmember("etc/conf").islnk()
        assert all(not m.pax_headers.get("atime") for m in tf.getmembers())
    dest = tmp_path / "dest"
    dest.mkdir()
    res = unpack.unpack_file(out1, dest)
    assert res.diff_id == d1
    assert (dest / "etc/conf").read_text() == "c" and stat.S_IMODE(os.lstat(dest / "etc/conf").st_mode) == 0o600
    assert os.lstat(dest / "etc/gone").st_rdev == 0 and stat.S_ISCHR(os.lstat(dest / "etc/gone").st_mode)
    assert os.getxattr(dest / "opq", "trusted.overlay.opaque") == b"y"
    assert os.readlink(dest / "etc/link") == "conf"


def test_zstd_and_plain(tmp_path: Path) -> None:
    import shutil
    import subprocess

    plain = make_tar([entry("f", data=b"z" * 1000)])
    (tmp_path / "a").mkdir()
    dest, res = extract_bytes(tmp_path / "a", plain)
    assert (dest / "f").read_bytes() == b"z" * 1000
    if shutil.which("zstd"):
        zst = subprocess.run(["zstd", "-q", "-c"], input=plain, capture_output=True, check=True).stdout
        (tmp_path / "b").mkdir()
        dest2, res2 = extract_bytes(tmp_path / "b", zst)
        assert res2.diff_id == res.diff_id and (dest2 / "f").read_bytes() == b"z" * 1000


def test_corrupt_gzip_is_an_image_error(tmp_path: Path) -> None:
    from devbox.errors import ImageError

    data = make_tar([entry("f", data=os.urandom(100_000))], compress=True)
    with pytest.raises(ImageError):
        extract_bytes(tmp_path, data[: len(data) // 2])


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_long_names_in_every_format(tmp_path: Path, fmt: int) -> None:
    deep = "/".join(["d" * 40] * 3)  # 122 chars: ustar prefix, GNU 'L', pax path
    long_target = "t" * 90 + "/" + "x" * 30
    entries = [entry(deep, tarfile.DIRTYPE), entry(f"{deep}/file", data=b"deep"),
               entry("ln", tarfile.SYMTYPE, link=long_target if fmt != tarfile.USTAR_FORMAT else "short")]  # fmt: skip
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tf:
        for ti, data in entries:
            ti.pax_headers = {}
            tf.addfile(ti, io.BytesIO(data) if ti.type == tarfile.REGTYPE else None)
    dest, res = extract_bytes(tmp_path, raw.getvalue())
    assert (dest / deep / "file").read_bytes() == b"deep"
    assert os.readlink(dest / "ln") == (long_target if fmt != tarfile.USTAR_FORMAT else "short")
    assert res.diff_id == "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()


def test_large_ids_and_base256(tmp_path: Path) -> None:
    tar = make_tar([entry("f", data=b"x", uid=3_000_000, gid=3_000_001)])
    dest, _ = extract_bytes(tmp_path, tar)
    st = os.lstat(dest / "f")
    assert (st.st_uid, st.st_gid) == (3_000_000, 3_000_001)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tf:  # uid in base-256
        ti, data = entry("g", data=b"y", uid=0o10000000 + 5)
        tf.addfile(ti, io.BytesIO(data))
    (tmp_path / "b").mkdir()
    dest2, _ = extract_bytes(tmp_path / "b", raw.getvalue())
    assert os.lstat(dest2 / "g").st_uid == 0o10000000 + 5


def test_bad_checksum_is_refused(tmp_path: Path) -> None:
    from devbox.errors import ImageError

    tar = bytearray(make_tar([entry("f", data=b"x")]))
    tar[0] ^= 1  # corrupt the name without fixing the checksum
    with pytest.raises(ImageError) as ei:
        extract_bytes(tmp_path, bytes(tar))
    assert "checksum" in str(ei.value)


def test_opaque_marker_without_a_dir_entry(tmp_path: Path) -> None:
    dest, _ = extract_bytes(tmp_path, make_tar([entry("a/b/.wh..wh..opq"), entry(".wh..wh..opq")]))
    assert os.getxattr(dest / "a/b", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(dest, "trusted.overlay.opaque") == b"y"


def test_odd_pax_values(tmp_path: Path) -> None:
    from devbox.errors import ImageError

    dest, _ = extract_bytes(tmp_path, make_tar([entry("f", data=b"x", pax={"mtime": "inf"})]))
    assert os.lstat(dest / "f").st_mtime == 0
    (tmp_path / "b").mkdir()
    with pytest.raises(ImageError):
        extract_bytes(tmp_path / "b", make_tar([entry("g", data=b"x", pax={"path": "a\0b"})]))
