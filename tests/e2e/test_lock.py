"""`devbox lock` and `devbox up --frozen` on real projects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import devbox, ok
from registry_fixture import Registry, registry_noauth  # noqa: F401

pytestmark = pytest.mark.root

FAKE = "sha256:" + "0" * 64


def _devboxfile(path: Path, name: str, base: str, extra: str = "") -> None:
    path.write_text(f"""name: {name}
boxes:
  web:
    base: {base}
    services:
      http:
        command: python3 -m http.server 8000 --directory /srv
        health: {{tcp: 8000}}
{extra}""")


@pytest.fixture
def proj(debian_image: str, tmp_path: Path) -> Iterator[Path]:
    f = tmp_path / "Devboxfile"
    try:
        yield f
    finally:
        if f.exists():
            devbox("destroy", "-f", "--file", str(f))
        devbox("rm", "-f", "lockx")
        for ref in ("locktest/base:1", "locktest/other:1", "locktest/x:1", "lockdeb-web:latest", "lockreg-web:latest",
                    "lockpull-web:latest"):  # fmt: skip
            devbox("image", "rm", ref)


def _image_id(ref: str) -> str:
    return json.loads(ok("image", "inspect", ref))["Id"]


def _container_id(name: str) -> str:
    return next(c["id"] for c in json.loads(ok("ps", "-a", "--json")) if c["name"] == name)


def _one_line_error(r: object, *words: str) -> None:
    assert r.returncode == 125, (r.stdout, r.stderr)  # type: ignore[attr-defined]
    err = r.stderr  # type: ignore[attr-defined]
    assert err.count("\n") == 1, err
    for w in words:
        assert w in err, err


def test_lock_debian_base_and_frozen(proj: Path, debian_image: str) -> None:
    _devboxfile(proj, "lockdeb", debian_image)
    f = ["--file", str(proj)]
    r = devbox("up", "--frozen", *f)
    _one_line_error(r, "--frozen", "Devboxfile.lock does not exist", "devbox lock")

    out = ok("lock", *f)
    lockfile = proj.with_name("Devboxfile.lock")
    assert out.strip() == str(lockfile)
    lock = json.loads(lockfile.read_text())
    box = lock["boxes"]["web"]
    assert lock["lockVersion"] == 1 and lock["project"] == "lockdeb"
    assert box["base"] == debian_image and box["digest"] == _image_id(debian_image)
    deb = box["debian"]
    assert deb["suite"] == "bookworm" and deb["mirror"].startswith("http")
    assert deb["packages"]["python3"] and deb["packages"]["supervisor"] and deb["packages"]["dpkg"]
    assert "release_date" in deb  # the Release file's Date: (absent only when the mirror is unreachable)

    ok("up", "--frozen", *f, timeout=300)
    cid = _container_id("lockdeb-web")

    # the pinned image is gone from this machine: the base is resolved again and its packages checked
    lock["boxes"]["web"]["digest"] = FAKE
    lockfile.write_text(json.dumps(lock))
    r = devbox("up", "--frozen", *f)
    assert r.returncode == 0, r.stderr
    assert "every package version matches" in r.stderr
    # ... and a package version the mirror no longer has fails under --frozen, warns without it
    lock["boxes"]["web"]["debian"]["packages"]["python3"] = "0.0-locked"
    lockfile.write_text(json.dumps(lock))
    r = devbox("up", "--frozen", *f)
    _one_line_error(r, "--frozen", "python3 0.0-locked in the lock", "devbox lock")
    r = devbox("up", *f)
    assert r.returncode == 0 and "python3 0.0-locked in the lock" in r.stderr, r.stderr
    assert _container_id("lockdeb-web") == cid  # nothing was recreated

    ok("lock", *f)
    # a changed Devboxfile no longer matches the lock
    _devboxfile(proj, "lockdeb", debian_image, "    packages: [curl]\n")
    _one_line_error(devbox("up", "--frozen", *f), "--frozen", "box web: its packages changed (added curl)")
    _devboxfile(proj, "lockdeb", "debian:trixie")
    _one_line_error(
        devbox("up", "--frozen", *f), "its base changed (debian:bookworm in the lock, debian:trixie"
    )
    _devboxfile(proj, "lockdeb", debian_image, f"  db:\n    base: {debian_image}\n")
    _one_line_error(devbox("up", "--frozen", *f), "box db: the box is not in the lock")
    _devboxfile(proj, "lockdeb", debian_image)
    ok("up", "--frozen", *f)
    assert _container_id("lockdeb-web") == cid

    lockfile.write_text("{not json")
    _one_line_error(devbox("up", *f), "Devboxfile.lock: not valid JSON")


def test_lock_pins_the_image_not_the_tag(proj: Path, debian_image: str) -> None:
    ok("image", "tag", debian_image, "locktest/base:1")
    _devboxfile(proj, "lockreg", "locktest/base:1")
    f = ["--file", str(proj)]
    ok("up", *f, timeout=300)
    ok("lock", *f)
    pinned = json.loads(proj.with_name("Devboxfile.lock").read_text())["boxes"]["web"]["digest"]
    assert pinned == _image_id(debian_image)
    cid = _container_id("lockreg-web")

    # the tag moves to another image (someone pulled a newer one): up keeps the pinned image
    ok("exec", "lockreg-web", "sh", "-c", "echo newer > /newer.txt")
    ok("commit", "web", "locktest/other:1", *f)
    ok("image", "tag", "locktest/other:1", "locktest/base:1")
    assert "web: none (up to date)" in ok("up", "--dry-run", *f)
    ok("up", "--frozen", *f)
    assert _container_id("lockreg-web") == cid

    # relocking takes the new image; up recreates the box from it
    ok("lock", *f)
    assert json.loads(proj.with_name("Devboxfile.lock").read_text())["boxes"]["web"]["digest"] == \
        _image_id("locktest/other:1")  # fmt: skip
    ok("up", "--frozen", *f, timeout=300)
    assert _container_id("lockreg-web") != cid
    assert ok("exec", "lockreg-web", "cat", "/newer.txt") == "newer\n"

    # a pinned image that is missing (and cannot be pulled) fails under --frozen, warns without it
    lock = json.loads(proj.with_name("Devboxfile.lock").read_text())
    lock["boxes"]["web"]["digest"] = FAKE
    proj.with_name("Devboxfile.lock").write_text(json.dumps(lock))
    _one_line_error(devbox("up", "--frozen", *f), "--frozen", "is not in the local store")
    r = devbox("up", *f)
    assert r.returncode == 0 and "Devboxfile.lock pins sha256:000000000000" in r.stderr, r.stderr


@pytest.mark.registry
def test_lock_registry_base_is_pulled_by_digest(proj: Path, debian_image: str, registry_noauth: Registry,  # noqa: F811
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("DEVBOX_AUTH_FILE", str(tmp_path / "auth.json"))
    ok("run", "--name", "lockx", "--network", "none", debian_image, "sh", "-c", "echo pinned > /pinned.txt")
    ok("commit", "lockx", "locktest/x:1")
    ref = registry_noauth.ref("lockt/deb:1")
    ok("push", "locktest/x:1", ref, timeout=300)
    ok("pull", ref, timeout=300)  # records the digest the registry served
    _devboxfile(proj, "lockpull", ref)
    f = ["--file", str(proj)]
    ok("lock", *f)
    box = json.loads(proj.with_name("Devboxfile.lock").read_text())["boxes"]["web"]
    assert (
        box["registry_digest"].startswith("sha256:")
        and box["repository"] == f"{registry_noauth.host}/lockt/deb"
    )
    pinned = box["digest"]

    # on "another machine": the tag has moved on in the registry, and the pinned image is not in the store
    ok("push", debian_image, ref, timeout=300)
    ok("image", "rm", ref)
    ok("image", "rm", "locktest/x:1")
    assert devbox("image", "inspect", pinned).returncode != 0
    r = devbox("up", "--frozen", *f, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "pulling the pinned base" in r.stderr
    assert ok("exec", "lockpull-web", "cat", "/pinned.txt") == "pinned\n"
    assert ok("image", "inspect", pinned)
