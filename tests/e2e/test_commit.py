"""`devbox commit` through the real command: layers with whiteouts, valid OCI (skopeo), images that run."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import devbox, ok

pytestmark = pytest.mark.root


@pytest.fixture
def made(busybox_image: str) -> Iterator[dict[str, list[str]]]:
    """Containers and images a test makes; removed at the end even when the test fails."""
    things: dict[str, list[str]] = {"containers": [], "images": []}
    yield things
    for n in things["containers"]:
        devbox("rm", "-f", n)
    for i in things["images"]:
        devbox("image", "rm", i)


def _manifest(root: Path, ref: str) -> dict:
    for e in json.loads((root / "images/index.json").read_text())["manifests"]:
        if (e.get("annotations") or {}).get("org.opencontainers.image.ref.name") == ref:
            return json.loads((root / "images/blobs/sha256" / e["digest"].split(":")[1]).read_bytes())
    raise AssertionError(f"{ref} not in index.json")


def _layer_names(layout: Path, desc: dict) -> list[str]:
    with tarfile.open(layout / "blobs/sha256" / desc["digest"].split(":")[1]) as tf:
        return [m.name for m in tf.getmembers()]


def test_commit_running_container_whiteouts_history_and_run(made: dict[str, list[str]], devbox_root: Path,
                                                             busybox_image: str) -> None:  # fmt: skip
    made["containers"].append("cmt1")
    made["images"] += ["cmt-img:v1"]
    ok("run", "-d", "--name", "cmt1", "--network", "none", busybox_image, "sleep", "1000")
    ok("exec", "cmt1", "sh", "-c", "echo hello > /added.txt && mkdir -p /opt/d && echo x > /opt/d/f "
                                  "&& rm /var/www/index.html && rm -rf /home && mkdir /home && echo n > /home/new")  # fmt: skip
    out = ok("commit", "cmt1", "cmt-img:v1", "-m", "my change")
    ref, digest = out.split()
    assert ref == "cmt-img:v1" and digest.startswith("sha256:")
    # the container kept running (it was frozen only while its changes were read)
    assert ok("exec", "cmt1", "cat", "/added.txt") == "hello\n"

    r = devbox("run", "--rm", "--network", "none", "cmt-img:v1", "sh", "-c",
               "cat /added.txt /opt/d/f /home/new; ls -A /home; test -e /var/www/index.html && echo STILL-THERE; true")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello\nx\nn\nnew\n"

    m = _manifest(devbox_root, "cmt-img:v1")
    assert m["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert m["annotations"]["org.opencontainers.image.base.digest"].startswith("sha256:")
    names = _layer_names(devbox_root / "images", m["layers"][-1])
    assert "var/www/.wh.index.html" in names
    assert "home/.wh..wh..opq" in names  # rm -rf + mkdir: an opaque directory
    # the engine's own mount targets are not part of the layer
    assert not any(n in names for n in ("etc/resolv.conf", "proc", "sys", "dev"))

    hist = json.loads(ok("image", "inspect", "cmt-img:v1"))
    text = json.dumps(hist)
    assert "devbox commit" in text and "my change" in text
    h = ok("image", "history", "cmt-img:v1")
    assert "devbox commit" in h and "my change" in h


def test_commit_default_name_and_stopped_container(made: dict[str, list[str]], busybox_image: str) -> None:
    made["containers"].append("Cmt_Two")
    made["images"].append("cmt_two-commit:latest")
    ok("run", "--name", "Cmt_Two", "--network", "none", busybox_image, "sh", "-c", "echo stopped > /s.txt")
    out = ok("commit", "Cmt_Two")
    assert out.split()[0] == "cmt_two-commit:latest"
    assert ok("run", "--rm", "--network", "none", "cmt_two-commit:latest", "cat", "/s.txt") == "stopped\n"


def test_committed_image_is_valid_oci_for_skopeo(made: dict[str, list[str]], devbox_root: Path,
                                                  busybox_image: str, tmp_path: Path) -> None:  # fmt: skip
    if not shutil.which("skopeo"):
        pytest.skip("skopeo is not installed")
    made["containers"].append("cmt3")
    made["images"].append("cmt-oci:1")
    ok(
        "run",
        "--name",
        "cmt3",
        "--network",
        "none",
        busybox_image,
        "sh",
        "-c",
        "echo oci > /oci.txt && rm /etc/group",
    )
    ok("commit", "cmt3", "cmt-oci:1")
    layout = f"oci:{devbox_root / 'images'}:cmt-oci:1"
    r = subprocess.run(["skopeo", "inspect", layout], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert len(info["Layers"]) == 2
    dest = tmp_path / "copy"
    r = subprocess.run(
        ["skopeo", "copy", layout, f"oci:{dest}:x"], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stderr
    # the copy, read back as an OCI layout by skopeo, has the same layers
    r = subprocess.run(["skopeo", "inspect", f"oci:{dest}:x"], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["Layers"] == info["Layers"]
    # and unpacked by hand, the last layer has the file and the whiteout
    idx = json.loads((dest / "index.json").read_text())
    man = json.loads((dest / "blobs/sha256" / idx["manifests"][0]["digest"].split(":")[1]).read_bytes())
    names = _layer_names(dest, man["layers"][-1])
    assert "oci.txt" in names and "etc/.wh.group" in names


def test_commit_of_a_box_leaves_out_mounts(devbox_root: Path, debian_image: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.txt").write_text("host file\n")
    f = tmp_path / "Devboxfile"
    f.write_text(f"""name: cmtbox
boxes:
  web:
    base: {debian_image}
    mounts: ["./src:/srv/app"]
    services:
      sleeper:
        command: sleep 100000
""")
    try:
        ok("up", "--file", str(f), timeout=300)
        ok("exec", "cmtbox-web", "sh", "-c", "echo box > /root/box.txt && echo more > /srv/app/more.txt")
        out = ok("commit", "web", "cmtbox-web-commit:1", "-m", "box change", cwd=tmp_path)
        assert out.startswith("cmtbox-web-commit:1 ")
        m = _manifest(devbox_root, "cmtbox-web-commit:1")
        names = _layer_names(devbox_root / "images", m["layers"][-1])
        assert "root/box.txt" in names
        assert not [n for n in names if n.startswith(("run/devbox", "var/log/devbox", "srv/app/"))], names
        assert (src / "more.txt").exists()  # written through the bind mount, to the host
        r = devbox("run", "--rm", "--network", "none", "cmtbox-web-commit:1", "cat", "/root/box.txt")
        assert r.stdout == "box\n", r.stderr
        # an unknown box or container: one clear line
        r = devbox("commit", "nosuchthing", cwd=tmp_path)
        assert r.returncode == 125 and r.stderr.count("\n") == 1 and "nosuchthing" in r.stderr
    finally:
        devbox("destroy", "-f", "--file", str(f))
        devbox("image", "rm", "cmtbox-web-commit:1")
