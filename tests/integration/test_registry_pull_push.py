# ruff: noqa: F811  (pytest fixtures imported from registry_fixture)
"""Pull, push, login against a real registry (Debian's docker-registry), with skopeo and podman as peers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_fixture import Podman, Registry, make_oci_layout, registry, registry_noauth, skopeo  # noqa: F401

from devbox.errors import ImageNotFound, RegistryError
from devbox.runtime.image import auth, pull, push
from devbox.runtime.image.store import ImageStore

pytestmark = [pytest.mark.root, pytest.mark.registry]
DEVBOX = str(Path(sys.executable).parent / "devbox")
FILES = {"hello.txt": b"hello from skopeo\n", "etc/motd": b"motd\n", "usr/share/doc/x": b"doc" * 1000}


@pytest.fixture
def authfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    p = tmp_path / "auth.json"
    monkeypatch.setenv("DEVBOX_AUTH_FILE", str(p))
    return p


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "root")


def no_scratch(store: ImageStore) -> None:
    left = [p.name for p in Path(store.tmp).iterdir()] if Path(store.tmp).exists() else []
    assert left == [], f"temp files left behind: {left}"


@pytest.fixture(scope="module")
def skopeo_image(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny OCI image pushed by skopeo to the auth registry as x/tiny:v1 (+ an index as x/multi:v1)."""
    d = tmp_path_factory.mktemp("oci")
    info = make_oci_layout(d / "one", FILES, "v1")
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        *registry.skopeo_creds(),
        f"oci:{d}/one:v1",
        f"docker://{registry.ref('x/tiny:v1')}",
    )
    multi = make_oci_layout(
        d / "multi", FILES, "v1", platforms=(("amd64", None), ("arm64", "v8"), ("arm", "v7"))
    )
    skopeo("copy", "--all", "--dest-tls-verify=false", *registry.skopeo_creds(), f"oci:{d}/multi:v1",
           f"docker://{registry.ref('x/multi:v1')}")  # fmt: skip
    return {**info, **{f"multi:{k}": v for k, v in multi.items()}}


def test_pull_image_skopeo_pushed(registry: Registry, skopeo_image: dict[str, str], store: ImageStore,
                                  authfile: Path) -> None:  # fmt: skip
    auth.save_credentials(registry.host, registry.user or "", registry.password or "")
    ref = registry.ref("x/tiny:v1")
    img = pull.pull(store, ref)
    assert img.ref == ref and img.digest == skopeo_image["manifest"]
    assert store.resolve(ref).digest == img.digest
    (layer,) = map(Path, store.layer_dirs(img))
    assert (layer / "hello.txt").read_bytes() == FILES["hello.txt"]
    assert (layer / "usr/share/doc/x").read_bytes() == FILES["usr/share/doc/x"]
    # the registry digest is recorded, and resolve_digest asks the registry without downloading
    assert pull.pulled_digest(ref, store.root) == skopeo_image["manifest"]
    assert pull.resolve_digest(ref) == skopeo_image["manifest"]
    no_scratch(store)
    # a second pull finds everything present: no blob is downloaded again
    before = {p.name: p.stat().st_mtime_ns for p in Path(store.blobs).iterdir()}
    assert pull.pull(store, ref).digest == img.digest
    assert {p.name: p.stat().st_mtime_ns for p in Path(store.blobs).iterdir()} == before
    # by digest: no tag, but resolvable through the record (what ensure_image's hook uses)
    store2 = ImageStore(Path(store.root).parent / "root2")
    by_digest = f"{registry.ref('x/tiny')}@{img.digest}"
    img2 = pull.pull(store2, by_digest)
    assert img2.digest == img.digest and img2.ref is None
    assert pull.ensure_pulled(store2, by_digest).digest == img.digest


def test_pull_index_selects_host_platform(registry: Registry, skopeo_image: dict[str, str], store: ImageStore,
                                          authfile: Path) -> None:  # fmt: skip
    auth.save_credentials(registry.host, registry.user or "", registry.password or "")
    ref = registry.ref("x/multi:v1")
    img = pull.pull(store, ref)
    o, a, v = pull.host_platform()
    plat = f"{o}/{a}/{v}" if a in ("arm64", "arm") else f"{o}/{a}"
    assert img.digest == skopeo_image[f"multi:{plat}"]
    assert img.config["architecture"] == a
    assert (Path(store.layer_dirs(img)[0]) / "arch").read_text().strip() == plat
    assert pull.pulled_digest(ref, store.root) == skopeo_image["multi:index"]  # the lockfile pins the index
    assert pull.resolve_digest(ref) == skopeo_image["multi:index"]
    other = pull.pull(store, ref, platform="linux/arm/v7")
    assert other.digest == skopeo_image["multi:linux/arm/v7"]
    with pytest.raises(ImageNotFound, match="no image for platform linux/s390x"):
        pull.pull(store, ref, platform="linux/s390x")


def test_pull_without_login_is_401(registry: Registry, skopeo_image: dict[str, str], store: ImageStore,
                                   authfile: Path) -> None:  # fmt: skip
    with pytest.raises(RegistryError, match=r"authentication required \(401\)") as ei:
        pull.pull(store, registry.ref("x/tiny:v1"))
    assert f"devbox login {registry.host}" in (ei.value.hint or "")
    assert store.list() == []


def test_pull_unknown_tag_is_404(registry_noauth: Registry, store: ImageStore, authfile: Path) -> None:
    with pytest.raises(RegistryError, match=r"not found \(404\)") as ei:
        pull.pull(store, registry_noauth.ref("nothing/here:v9"))
    assert "MANIFEST_UNKNOWN" in ei.value.message or "404" in ei.value.message
    assert store.list() == []


def test_corrupt_blob_in_registry_is_refused(registry_noauth: Registry, tmp_path: Path, store: ImageStore,
                                             authfile: Path) -> None:  # fmt: skip
    info = make_oci_layout(tmp_path / "oci", {"a": b"corrupt me" * 100}, "v1")
    ref = registry_noauth.ref("x/corrupt:v1")
    skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path}/oci:v1", f"docker://{ref}")
    data = registry_noauth.blob_data_path(info["layer"])
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(RegistryError, match="digest mismatch") as ei:
        pull.pull(store, ref)
    assert "nothing was stored" in (ei.value.hint or "")
    assert store.list() == []
    assert not store.has_blob(info["layer"])
    no_scratch(store)


def test_push_then_skopeo_reads_it(
    registry: Registry, store: ImageStore, authfile: Path, tmp_path: Path
) -> None:
    img = _store_image(store, tmp_path, "local/app:1", big=True)
    auth.save_credentials(registry.host, registry.user or "", registry.password or "")
    dest = registry.ref("team/app:1")
    res = push.push(store, "local/app:1", dest, chunk_size=256 << 10)  # the 1 MiB layer goes in PATCH chunks
    assert res.digest == img.digest and set(res.blobs.values()) == {"uploaded"}
    raw = skopeo("inspect", "--tls-verify=false", "--creds", registry.creds, "--raw", f"docker://{dest}")
    assert json.loads(raw) == img.manifest
    info = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", registry.creds, f"docker://{dest}"))
    assert info["Digest"] == img.digest and info["Architecture"] == img.config["architecture"]
    out = tmp_path / "copied"
    skopeo(
        "copy", "--src-tls-verify=false", "--src-creds", registry.creds, f"docker://{dest}", f"oci:{out}:x"
    )
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == img.digest
    # push again: every blob is already there; to another repository: blobs are mounted, not uploaded
    assert set(push.push(store, "local/app:1", dest).blobs.values()) == {"exists"}
    assert set(push.push(store, "local/app:1", registry.ref("other/app:1")).blobs.values()) == {"mounted"}
    # and devbox pulls its own push back into a fresh store: same image
    store2 = ImageStore(tmp_path / "root2")
    assert pull.pull(store2, registry.ref("other/app:1")).digest == img.digest


def _store_image(store: ImageStore, tmp_path: Path, ref: str, big: bool = False) -> object:
    import io
    import tarfile

    from devbox.runtime.image import importer

    tar = tmp_path / "layer.tar"
    with tarfile.open(tar, "w") as tf:
        for name, data in {"app/hello": b"hi\n", "app/big": os.urandom(1 << 20) if big else b"x"}.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    desc, diff_id = store.add_layer_tar(tar)
    return store.write_image(importer.default_config([diff_id], "test"), [desc], ref=ref)


def test_login_logout_cli(registry: Registry, authfile: Path) -> None:
    env = dict(os.environ, DEVBOX_AUTH_FILE=str(authfile))

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DEVBOX, *args], input=stdin, env=env, capture_output=True, text=True, timeout=60
        )

    bad = run("login", registry.host, "-u", registry.user or "", "--password-stdin", stdin="wrong\n")
    assert bad.returncode == 125
    assert bad.stderr.startswith(f"devbox: error: login: {registry.host} refused the credentials (401)")
    assert not authfile.exists()
    ok = run(
        "login", registry.host, "-u", registry.user or "", "--password-stdin", stdin=f"{registry.password}\n"
    )
    assert ok.returncode == 0, ok.stderr
    assert auth.get_credentials(registry.host) == (registry.user, registry.password)
    assert run("logout", registry.host).returncode == 0
    assert auth.get_credentials(registry.host) is None
    again = run("logout", registry.host)
    assert again.returncode == 125 and "not logged in" in again.stderr


def test_cli_pull_quiet(registry_noauth: Registry, tmp_path: Path, authfile: Path) -> None:
    make_oci_layout(tmp_path / "oci", {"f": b"cli"}, "v1")
    ref = registry_noauth.ref("cli/img:v1")
    skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path}/oci:v1", f"docker://{ref}")
    env = dict(os.environ, DEVBOX_ROOT=str(tmp_path / "root"), DEVBOX_AUTH_FILE=str(authfile))
    r = subprocess.run([DEVBOX, "pull", "-q", ref], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ImageStore(tmp_path / "root").resolve(ref).digest
    r = subprocess.run([DEVBOX, "pull", registry_noauth.ref("cli/none:v1")], env=env, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 125 and "not found (404)" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    p = Podman(Path(tempfile.mkdtemp(prefix="dbxpm-", dir="/dev/shm")))
    try:
        yield p
    finally:
        p.cleanup()


def test_podman_runs_an_image_devbox_pushed(registry_noauth: Registry, busybox_image: str, session_root: Path,
                                            podman: Podman, authfile: Path) -> None:  # fmt: skip
    store = ImageStore(session_root)
    dest = registry_noauth.ref("devbox/busybox:pushed")
    res = push.push(store, busybox_image, dest)
    r = podman("pull", "--tls-verify=false", dest)
    assert r.returncode == 0, r.stderr
    r = podman("image", "inspect", "--format", "{{.Digest}}", dest)
    assert r.stdout.strip() == res.digest
    r = podman("run", "--rm", "--network", "none", dest, "/bin/cat", "/var/www/index.html")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello from busybox\n"
