"""`devbox image ...` through the real command, archives made by skopeo, and the Debian bootstrap."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from images import make_busybox_rootfs_tar

pytestmark = pytest.mark.root

DEVBOX = str(Path(__file__).resolve().parents[2] / ".venv/bin/devbox")


def devbox(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DEVBOX_ROOT=str(root))
    r = subprocess.run([DEVBOX, *args], env=env, capture_output=True, text=True, timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(f"devbox {' '.join(args)} exited {r.returncode}: {r.stderr}")
    return r


def skopeo(*args: str) -> str:
    r = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def inspect(root: Path, ref: str) -> dict:
    return json.loads(devbox(root, "image", "inspect", ref).stdout)


@pytest.fixture(scope="module")
def rootfs_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_busybox_rootfs_tar(tmp_path_factory.mktemp("bb") / "busybox.tar.gz")


def test_import_ls_inspect_tag_history_rm(session_root: Path, rootfs_tar: Path) -> None:
    out = devbox(session_root, "image", "import", str(rootfs_tar), "it-bb:1").stdout
    assert out.startswith("it-bb:1 sha256:")
    ls = devbox(session_root, "image", "ls").stdout
    assert any(line.split()[:2] == ["it-bb", "1"] for line in ls.splitlines())
    data = inspect(session_root, "it-bb:1")
    assert data["RepoTags"] == ["it-bb:1"] and data["Os"] == "linux"
    assert data["Config"]["Env"][0].startswith("PATH=")
    layer = Path(data["LayerDirs"][0])
    assert (layer / "bin/busybox").is_file() and os.readlink(layer / "bin/sh") == "busybox"
    devbox(session_root, "image", "tag", "it-bb:1", "it-bb:2")
    js = json.loads(devbox(session_root, "image", "ls", "--json").stdout)
    mine = {x["ref"]: x for x in js if (x["ref"] or "").startswith("it-bb")}
    assert set(mine) == {"it-bb:1", "it-bb:2"} and mine["it-bb:1"]["digest"] == mine["it-bb:2"]["digest"]
    assert data["Id"][7:19] in devbox(session_root, "image", "ls", "-q").stdout.split()
    hist = devbox(session_root, "image", "history", "it-bb:2").stdout
    assert "devbox image import busybox.tar.gz" in hist
    assert devbox(session_root, "image", "rm", "it-bb:1").stdout.strip() == "untagged: it-bb:1"
    out = devbox(session_root, "image", "rm", "it-bb:2").stdout
    assert "deleted: sha256:" in out
    r = devbox(session_root, "image", "inspect", "it-bb:2", check=False)
    assert r.returncode == 125 and r.stderr.startswith("devbox: error: image 'it-bb:2' not found")
    assert "devbox pull" in r.stderr
    assert "removed" in devbox(session_root, "image", "prune").stdout


def test_store_is_an_oci_layout_and_archives_round_trip(session_root: Path, rootfs_tar: Path, tmp_path: Path) -> None:
    devbox(session_root, "image", "import", str(rootfs_tar), "rt-src:1")
    src = inspect(session_root, "rt-src:1")
    store = session_root / "images"
    # skopeo reads devbox's store as an OCI layout, and writes the archive formats devbox must read
    skopeo("copy", f"oci:{store}:rt-src:1", f"docker-archive:{tmp_path}/docker.tar:rt-docker:1")
    skopeo("copy", f"oci:{store}:rt-src:1", f"oci-archive:{tmp_path}/oci.tar:rt-oci:1")
    skopeo("copy", f"oci:{store}:rt-src:1", f"oci:{tmp_path}/layout:rt-layout:1")

    assert "loaded: rt-docker:1" in devbox(session_root, "image", "load", "-i", f"{tmp_path}/docker.tar").stdout
    devbox(session_root, "image", "import", f"{tmp_path}/oci.tar", "rt-oci:2")
    devbox(session_root, "image", "import", f"{tmp_path}/layout", "rt-layout:2")
    for ref in ("rt-docker:1", "rt-oci:2", "rt-layout:2"):
        assert inspect(session_root, ref)["RootFS"]["diff_ids"] == src["RootFS"]["diff_ids"], ref
    assert inspect(session_root, "rt-oci:2")["Id"] == src["Id"]  # same manifest bytes kept

    # and back out: both formats are readable by skopeo (and so by docker/podman)
    devbox(session_root, "image", "save", "rt-oci:2", "-o", f"{tmp_path}/out-oci.tar")
    devbox(session_root, "image", "save", "rt-oci:2", "-o", f"{tmp_path}/out-docker.tar", "--format", "docker")
    info = json.loads(skopeo("inspect", f"oci-archive:{tmp_path}/out-oci.tar"))
    assert info["Digest"] == src["Id"]
    info = json.loads(skopeo("inspect", f"docker-archive:{tmp_path}/out-docker.tar"))
    assert len(info["Layers"]) == 1
    skopeo("copy", f"docker-archive:{tmp_path}/out-docker.tar", f"oci:{tmp_path}/back:back")
    # a saved archive loads again
    devbox(session_root, "image", "rm", "rt-oci:2")
    assert "loaded: rt-oci:2" in devbox(session_root, "image", "load", "-i", f"{tmp_path}/out-docker.tar").stdout
    for ref in ("rt-src:1", "rt-docker:1", "rt-layout:2", "rt-oci:2"):
        devbox(session_root, "image", "rm", ref)


def test_hostile_docker_archive_is_refused(session_root: Path, tmp_path: Path) -> None:
    manifest = json.dumps([{"Config": "../../../../etc/passwd", "RepoTags": ["evil:1"], "Layers": []}]).encode()
    p = tmp_path / "evil.tar"
    with tarfile.open(p, "w") as tf:
        ti = tarfile.TarInfo("manifest.json")
        ti.size = len(manifest)
        tf.addfile(ti, io.BytesIO(manifest))
    r = devbox(session_root, "image", "load", "-i", str(p), check=False)
    assert r.returncode == 125 and "outside" in r.stderr
    assert devbox(session_root, "image", "inspect", "evil:1", check=False).returncode == 125


def test_errors_are_one_line(session_root: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(4096))
    r = devbox(session_root, "image", "import", str(junk), "junk:1", check=False)
    assert r.returncode == 125 and r.stderr.count("\n") == 1 and "devbox: error:" in r.stderr
    r = devbox(session_root, "image", "bootstrap", "ubuntu:noble", check=False)
    assert r.returncode == 125 and "only debian:SUITE" in r.stderr
    r = devbox(session_root, "image", "bootstrap", "debian:nosuchsuite", check=False)
    assert r.returncode == 125 and "unknown Debian suite" in r.stderr.splitlines()[-1]
    r = devbox(session_root, "image", "rm", "nothing:here", check=False)
    assert r.returncode == 125 and "not found" in r.stderr


@pytest.mark.debian
def test_bootstrap_debian_bookworm(session_root: Path) -> None:
    """`devbox image bootstrap` end to end (mmdebstrap output cached per machine, see tests/images.py)."""
    if not shutil.which("mmdebstrap"):
        pytest.skip("mmdebstrap is not installed")
    r = devbox(session_root, "image", "bootstrap", "debian:bookworm")
    assert r.stdout.startswith("debian:bookworm sha256:")
    data = inspect(session_root, "debian:bookworm")
    assert data["Config"]["Cmd"] == ["bash"]
    assert "mmdebstrap --variant=minbase" in data["History"][0]["created_by"]
    layer = Path(data["LayerDirs"][0])
    assert (layer / "usr/bin/python3").exists() and (layer / "usr/bin/supervisord").exists()
    assert (layer / "dev").is_dir() and os.listdir(layer / "dev") == []  # no device nodes stored
    assert os.stat(layer / "usr/bin/su").st_mode & 0o4000  # setuid kept inside the layer


def test_fixtures(session_root: Path, busybox_image: str, debian_image: str) -> None:
    from devbox.runtime.image import ensure_image
    from devbox.runtime.image.store import ImageStore

    store = ImageStore(session_root)
    bb = ensure_image(store, busybox_image)
    assert (Path(store.layer_dirs(bb)[0]) / "bin/busybox").is_file()
    deb = ensure_image(store, debian_image)
    assert (Path(store.layer_dirs(deb)[0]) / "usr/bin/python3").exists()


@pytest.mark.debian
def test_ensure_image_bootstraps_debian_trixie(session_root: Path) -> None:
    """A missing debian:SUITE is bootstrapped on demand (trixie, from bookworm's mmdebstrap)."""
    if not shutil.which("mmdebstrap"):
        pytest.skip("mmdebstrap is not installed")
    from devbox.runtime.image import ensure_image
    from devbox.runtime.image.store import ImageStore

    store = ImageStore(session_root)
    img = ensure_image(store, "debian:trixie")
    assert img.ref == "debian:trixie" and img.config["config"]["Cmd"] == ["bash"]
    layer = Path(store.layer_dirs(img)[0])
    assert 'VERSION_CODENAME=trixie' in (layer / "etc/os-release").read_text()
    assert (layer / "usr/bin/python3").exists() and (layer / "usr/bin/supervisord").exists()
    assert ensure_image(store, "debian:trixie").digest == img.digest  # second call: local
