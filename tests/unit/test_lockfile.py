"""Devboxfile.lock: the pure parts (format, validation, comparing with a Devboxfile, dpkg/Release parsing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devbox import devboxfile, lockfile
from devbox.lockfile import BoxLock, DebianPin, Lock, LockError

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


def _project(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    f = tmp_path / "Devboxfile"
    f.write_text(text)
    return devboxfile.load(f)


PROJECT = """name: shop
boxes:
  web:
    base: debian:bookworm
    packages: [curl, git]
  api:
    base: python:3.12
"""


def _lock() -> Lock:
    deb = DebianPin("bookworm", "http://deb.debian.org/debian", "Sat, 11 Jul 2026 10:16:37 UTC",
                    "2026-07-12T00:00:00Z", {"curl": "7.88.1-10+deb12u12", "git": "1:2.39.5-0+deb12u2"})  # fmt: skip
    return Lock("shop", {
        "web": BoxLock("debian:bookworm", ("curl", "git"), D1, "debian:bookworm-0123456789ab", debian=deb),
        "api": BoxLock("python:3.12", (), D2, "python:3.12", registry_digest=D1, repository="docker.io/library/python"),
    })  # fmt: skip


def test_lock_path_is_next_to_the_devboxfile(tmp_path: Path) -> None:
    assert lockfile.lock_path(tmp_path / "Devboxfile") == tmp_path / "Devboxfile.lock"
    assert lockfile.lock_path(tmp_path / "dev.yml") == tmp_path / "dev.yml.lock"


def test_round_trip_is_stable_json() -> None:
    text = lockfile.dumps(_lock())
    assert text.endswith("}\n") and text == lockfile.dumps(lockfile.loads(text))
    raw = json.loads(text)
    assert raw["lockVersion"] == 1 and raw["generatedBy"] == "devbox lock"
    assert "registry_digest" not in raw["boxes"]["web"]  # None values are left out
    assert lockfile.loads(text) == _lock()


@pytest.mark.parametrize(("mutate", "words"), [
    (lambda d: d.update(lockVersion=2), "lockVersion 2 is not supported"),
    (lambda d: d.pop("boxes"), "-> boxes: missing"),
    (lambda d: d["boxes"]["web"].update(digest="sha256:xyz"), "boxes -> web -> digest: not a sha256 digest"),
    (lambda d: d["boxes"]["web"].pop("base"), "boxes -> web -> base: missing"),
    (lambda d: d["boxes"]["web"].update(packages="curl"), "boxes -> web -> packages: must be list"),
    (lambda d: d["boxes"]["web"]["debian"].update(packages={"curl": 1}), "debian -> packages: must map"),
    (lambda d: d["boxes"]["web"]["debian"].pop("suite"), "web -> debian -> suite: missing"),
])  # fmt: skip
def test_validation_names_the_field(mutate, words: str) -> None:  # type: ignore[no-untyped-def]
    d = lockfile.to_dict(_lock())
    mutate(d)
    with pytest.raises(LockError) as e:
        lockfile.loads(json.dumps(d))
    assert words in e.value.message


def test_not_json() -> None:
    with pytest.raises(LockError, match="not valid JSON"):
        lockfile.loads("{")


def test_project_changes(tmp_path: Path) -> None:
    p = _project(tmp_path, PROJECT)
    assert lockfile.project_changes(_lock(), p) == []
    p = _project(tmp_path, PROJECT.replace("[curl, git]", "[git, vim]").replace("python:3.12", "python:3.13")
                 + "  db:\n    base: debian:bookworm\n")  # fmt: skip
    assert lockfile.project_changes(_lock(), p) == [
        "box web: its packages changed (added vim; removed curl)",
        "box api: its base changed (python:3.12 in the lock, python:3.13 in the Devboxfile)",
        "box db: the box is not in the lock (added since)",
    ]
    p = _project(
        tmp_path, "name: shop\nboxes:\n  web:\n    base: debian:bookworm\n    packages: [git, curl, git]\n"
    )
    assert lockfile.project_changes(_lock(), p) == [
        "box api: in the lock but no longer in the Devboxfile (removed since)"
    ]


def test_check_frozen(tmp_path: Path) -> None:
    p = _project(tmp_path, PROJECT)
    with pytest.raises(LockError, match="Devboxfile.lock does not exist"):
        lockfile.check_frozen(p)
    lockfile.write(p, _lock())
    assert lockfile.check_frozen(p) == _lock()
    p = _project(tmp_path, PROJECT.replace("python:3.12", "python:3.13"))
    with pytest.raises(LockError) as e:
        lockfile.check_frozen(p)
    assert e.value.message.startswith(
        "--frozen: the Devboxfile does not match Devboxfile.lock: box api: its base"
    )
    assert "devbox lock" in (e.value.hint or "")


def test_debian_base_ref_matches_the_orchestrator() -> None:
    assert lockfile.debian_base_ref("bookworm", ()) == "debian:bookworm"
    a = lockfile.debian_base_ref("bookworm", ("git", "curl", "git"))
    assert a == lockfile.debian_base_ref("bookworm", ("curl", "git")) and a.startswith("debian:bookworm-")


STATUS = """Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u10
Description: GNU C Library
 continuation line: not a field

Package: libc6
Status: install ok installed
Architecture: i386
Version: 2.36-9+deb12u10

Package: removed-one
Status: deinstall ok config-files
Version: 1.0

Package: python3
Status: install ok installed
Architecture: amd64
Version: 3.11.2-1+b1
"""


def test_parse_dpkg_status() -> None:
    assert lockfile.parse_dpkg_status(STATUS) == {
        "libc6": "2.36-9+deb12u10", "libc6:i386": "2.36-9+deb12u10", "python3": "3.11.2-1+b1"}  # fmt: skip


def test_package_changes() -> None:
    locked = {"a": "1", "b": "2", "c": "3"}
    assert lockfile.package_changes(locked, dict(locked)) == []
    assert lockfile.package_changes(locked, {"a": "1", "b": "2.1", "d": "4"}) == [
        "b 2 in the lock, 2.1 installed", "c 3 is in the lock but not installed",
        "d 4 is installed but not in the lock"]  # fmt: skip
    many = lockfile.package_changes({f"p{i}": "1" for i in range(20)}, {}, limit=3)
    assert len(many) == 4 and many[-1] == "... and 17 more"


def test_parse_release_date() -> None:
    text = "Origin: Debian\nSuite: stable\nDate: Sat, 11 Jul 2026 10:16:37 UTC\nValid-Until: x\n"
    assert lockfile.parse_release_date(text) == "Sat, 11 Jul 2026 10:16:37 UTC"
    assert lockfile.parse_release_date("Origin: Debian\n") is None


def test_pinned_base_without_lock_or_with_stale_entry(tmp_path: Path) -> None:
    class Store:
        def resolve(self, ref: str) -> str:
            return f"image {ref}"

    said: list[str] = []
    p = _project(tmp_path, PROJECT)
    assert lockfile.pinned_base(Store(), p, p.boxes["web"], say=said.append) is None
    lockfile.write(p, _lock())
    assert lockfile.pinned_base(Store(), p, p.boxes["web"], say=said.append) == f"image {D1}"
    p = _project(tmp_path, PROJECT.replace("[curl, git]", "[curl]"))
    assert lockfile.pinned_base(Store(), p, p.boxes["web"], say=said.append) is None
    assert said == [
        "box web: Devboxfile.lock is out of date (its packages changed (removed git)); "
        "run `devbox lock` to pin the new base"
    ]
    with pytest.raises(LockError, match="--frozen: box web: its packages changed"):
        lockfile.pinned_base(Store(), p, p.boxes["web"], frozen=True, say=said.append)
