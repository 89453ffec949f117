"""Hostile layers: one test per attack. Each asserts the layer is refused, nothing outside the layer
directory changed, nothing got registered, and no scratch directory is left behind."""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_unpack import entry, make_tar

from devbox.errors import ImageError
from devbox.runtime.image.store import OCI_LAYER, OCI_LAYER_GZIP, ImageStore

pytestmark = pytest.mark.root


def snapshot(*roots: Path) -> dict[str, tuple[int, int, int, int, str]]:
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for n in dirnames + filenames + ["."]:
                p = os.path.join(dirpath, n)
                st = os.lstat(p)
                digest = ""
                if os.path.isfile(p) and not os.path.islink(p):
                    digest = hashlib.sha256(open(p, "rb").read()).hexdigest()
                out[p] = (st.st_mode, st.st_uid, st.st_nlink, int(st.st_mtime), digest)
    for f in ("/etc/passwd", "/etc/shadow", "/etc/hostname"):
        st = os.lstat(f)
        out[f] = (st.st_mode, st.st_uid, st.st_nlink, int(st.st_mtime), hashlib.sha256(open(f, "rb").read()).hexdigest())
    return out


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[ImageStore, Path]]:
    store = ImageStore(tmp_path / "state")
    with store.transaction():  # creates the layout
        pass
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("original\n")
    os.chmod(outside / "victim", 0o644)
    yield store, outside


def attack(store: ImageStore, outside: Path, entries: list, compress: bool = False) -> ImageError:
    """Feed the tar to the store; assert it is refused and left no trace."""
    data = make_tar(entries, compress=compress)
    blob = store.put_blob_bytes(data)
    before = snapshot(outside)
    with pytest.raises(ImageError) as ei:
        store.unpack_layer(blob, OCI_LAYER_GZIP if compress else OCI_LAYER, None)
    assert snapshot(outside) == before, "something outside the layer changed"
    assert os.listdir(store.layers) == [], "a layer got registered"
    assert os.listdir(store.tmp) == [], "scratch left behind"
    assert ei.value.hint
    return ei.value


def test_dotdot_name(env: tuple[ImageStore, Path]) -> None:
    store, outside = env
    e = attack(store, outside, [entry("../" * 12 + str(outside / "victim")[1:], data=b"pwned")])
    assert ".." in str(e)


def test_dotdot_in_the_middle(env: tuple[ImageStore, Path]) -> None:
    store, outside = env
    attack(store, outside, [entry("a", tarfile.DIRTYPE), entry("a/../../../../../../../" + str(outside)[1:] + "/new",
                                                                data=b"x")])  # fmt: skip


def test_absolute_name(env: tuple[ImageStore, Path]) -> None:
    store, outside = env
    e = attack(store, outside, [entry(str(outside / "victim"), data=b"pwned")])
    assert "absolute" in str(e)


def test_symlink_out_then_write_through_it(env: tuple[ImageStore, Path]) -> None:
    store, outside = env
    attack(store, outside, [entry("a", tarfile.SYMTYPE, link=str(outside)), entry("a/victim", data=b"pwned"),
                            entry("etc", tarfile.SYMTYPE, link="/etc"), entry("etc/passwd", data=b"pwned")])  # fmt: skip


def test_relative_symlink_dir_then_file_through_it(env: tuple[ImageStore, Path]) -> None:
    store, outside = env
    attack(store, outside, [entry("d", tarfile.SYMTYPE, link="../" * 12 + str(outside)[1:]),
                            entry("d/new-file", data=b"pwned")])  # fmt: skip


def test_symlink_dir_then_mkdir_through_it(env: tuple[ImageStore, Path]) -> None:
    store, outside = env
    attack(store, outside, [entry("d", tarfile.SYMTYPE, link=str(outside)), entry("d/sub", tarfile.DIRTYPE)])


def test_hardlink_to_outside_absolute(env: tuple[ImageStore, Path]) -> None:
    store, outside = env
    attack(store, outside, [entry("evil", tarfile.LNKTYPE, link="/etc/passwd"), entry("evil", data=b"root::0:0")])


def test_hardlink_to_outside_dotdot(env: tuple[ImageStore, Path]) -> None:
    store, outside = env
    attack(store, outside, [entry("evil", tarfile.LNKTYPE, link="../" * 12 + str(outside / "victim")[1:])])


def test_hardlink_through_symlinked_parent(env: tuple[ImageStore, Path]) -> None:
    store, outside = env
    attack(store, outside, [entry("o", tarfile.SYMTYPE, link=str(outside)),
                            entry("evil", tarfile.LNKTYPE, link="o/victim")])  # fmt: skip


def test_device_node(env: tuple[ImageStore, Path]) -> None:
    store, outside = env
    e = attack(store, outside, [entry("disk", tarfile.BLKTYPE, mode=0o666, dev=(8, 0))])
    assert "device" in str(e)
    attack(store, outside, [entry("mem", tarfile.CHRTYPE, mode=0o666, dev=(1, 1))])


def test_setuid_file_whose_path_escapes(env: tuple[ImageStore, Path]) -> None:
    store, outside = env
    attack(store, outside, [entry("bin", tarfile.SYMTYPE, link=str(outside)),
                            entry("bin/su", data=b"#!/bin/sh\nexec sh\n", mode=0o4755)])  # fmt: skip
    assert not (outside / "su").exists()
    attack(store, outside, [entry("../" * 12 + str(outside / "su")[1:], data=b"x", mode=0o4755)])


def test_decompression_bomb_over_the_cap(env: tuple[ImageStore, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    store, outside = env
    monkeypatch.setenv("DEVBOX_MAX_LAYER_BYTES", str(1 << 20))
    e = attack(store, outside, [entry("zeros", data=b"\0" * (4 << 20))], compress=True)
    assert "limit" in str(e)


def test_whiteout_escape(env: tuple[ImageStore, Path]) -> None:
    store, outside = env
    attack(store, outside, [entry("o", tarfile.SYMTYPE, link=str(outside)), entry("o/.wh.victim")])
    attack(store, outside, [entry("o", tarfile.SYMTYPE, link=str(outside)), entry("o/.wh..wh..opq")])


def test_digest_mismatch_stores_nothing(env: tuple[ImageStore, Path]) -> None:
    store, _ = env
    with pytest.raises(ImageError):
        store.put_blob_bytes(b"content", expected="sha256:" + "0" * 64)
    assert os.listdir(store.blobs) == [] and os.listdir(store.tmp) == []
    f = Path(store.temp_path("blob"))
    f.write_bytes(b"content")
    with pytest.raises(ImageError):
        store.put_blob_file(f, expected="sha256:" + "0" * 64)
    assert os.listdir(store.blobs) == [] and os.listdir(store.tmp) == []


def test_diffid_mismatch_registers_nothing(env: tuple[ImageStore, Path]) -> None:
    store, _ = env
    data = make_tar([entry("f", data=b"x")])
    blob = store.put_blob_bytes(gzip.compress(data))
    with pytest.raises(ImageError) as ei:
        store.unpack_layer(blob, OCI_LAYER_GZIP, "sha256:" + "1" * 64)
    assert "DiffID" in str(ei.value)
    assert os.listdir(store.layers) == [] and os.listdir(store.tmp) == []
    good = store.unpack_layer(blob, OCI_LAYER_GZIP, "sha256:" + hashlib.sha256(data).hexdigest())
    assert store.has_layer(good)


def test_harmless_replacements_do_not_write_through(env: tuple[ImageStore, Path]) -> None:
    """Not refused, but must not touch the target: a file entry replaces a symlink or a hardlink."""
    store, outside = env
    before = snapshot(outside)
    data = make_tar([
        entry("s", tarfile.SYMTYPE, link=str(outside / "victim")),
        entry("s", data=b"replaced"),
        entry("t", tarfile.SYMTYPE, link=str(outside)),
        entry("t", tarfile.DIRTYPE, mode=0o777),
        entry("orig", data=b"o"),
        entry("hl", tarfile.LNKTYPE, link="orig"),
        entry("hl", data=b"new"),
    ])  # fmt: skip
    diff = store.unpack_layer(store.put_blob_bytes(data), OCI_LAYER, None)
    d = Path(store.layer_dir(diff))
    assert (d / "s").read_bytes() == b"replaced" and not (d / "s").is_symlink()
    assert (d / "t").is_dir() and not (d / "t").is_symlink()
    assert (d / "orig").read_bytes() == b"o" and (d / "hl").read_bytes() == b"new"
    assert snapshot(outside) == before
