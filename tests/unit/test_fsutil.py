"""devbox.fsutil: atomic writes, the fd-based rmtree and the OpenSSL-free sha256."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from devbox import fsutil


def test_rmtree_removes_a_tree_without_following_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_text("x")
    (tree / "a" / "link-dir").symlink_to(outside)  # a container's upper dir may hold such links
    (tree / "a" / "link-file").symlink_to(outside / "keep")
    (tree / "a" / "b" / "locked").mkdir(mode=0o000)  # root removes it regardless of its mode
    fsutil.rmtree(tree)
    assert not tree.exists()
    assert (outside / "keep").read_text() == "precious"


def test_rmtree_of_a_symlink_removes_the_link_only(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "f").write_text("x")
    link = tmp_path / "link"
    link.symlink_to(target)
    fsutil.rmtree(link)
    assert not link.is_symlink() and (target / "f").exists()
    fsutil.rmtree(tmp_path / "missing")  # no error


def test_sha256_hex_matches_hashlib() -> None:
    for data in (b"", b"devbox", os.urandom(100_000)):
        assert fsutil.sha256_hex(data) == hashlib.sha256(data).hexdigest()


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    p = tmp_path / "d" / "state.json"
    fsutil.write_json(p, {"a": 1})
    fsutil.write_json(p, {"a": 2})
    assert fsutil.read_json(p) == {"a": 2}
    assert [x.name for x in p.parent.iterdir()] == ["state.json"]
