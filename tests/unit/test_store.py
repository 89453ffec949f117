from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from test_unpack import entry, make_tar

from devbox.errors import ConfigError, ImageError, ImageNotFound
from devbox.runtime.image import ensure_image
from devbox.runtime.image.importer import default_config
from devbox.runtime.image.store import OCI_LAYER_GZIP, ImageStore

pytestmark = pytest.mark.root


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "state")


def make_image(store: ImageStore, tmp_path: Path, ref: str | None, content: bytes = b"hello") -> tuple:
    tar = tmp_path / f"layer-{os.urandom(4).hex()}.tar"
    tar.write_bytes(make_tar([entry("etc", tarfile.DIRTYPE), entry("etc/msg", data=content)]))
    desc, diff_id = store.add_layer_tar(tar)
    img = store.write_image(default_config([diff_id], created_by="test"), [desc], ref)
    return img, desc, diff_id


def test_layout_and_write_resolve(store: ImageStore, tmp_path: Path) -> None:
    img, desc, diff_id = make_image(store, tmp_path, "docker.io/library/app:1")
    assert img.ref == "app:1"
    assert desc["mediaType"] == OCI_LAYER_GZIP and store.has_blob(desc["digest"])
    assert json.loads((Path(store.images) / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((Path(store.images) / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "app:1"
    assert (Path(store.layer_dir(diff_id)) / "etc/msg").read_bytes() == b"hello"
    for q in ("app:1", "library/app:1", img.digest, img.short_id, img.digest[:11], f"app@{img.digest}"):
        got = store.resolve(q)
        assert got.digest == img.digest and got.diff_ids == [diff_id]
    assert store.resolve("app:1").ref == "app:1"
    assert store.resolve(img.short_id).ref is None
    assert store.layer_dirs(img) == [store.layer_dir(diff_id)]
    assert img.size > 0 and img.created


def test_not_found_has_hint(store: ImageStore) -> None:
    with pytest.raises(ImageNotFound) as ei:
        store.resolve("nope:1")
    assert "devbox pull" in ei.value.hint
    with pytest.raises(ConfigError):
        store.resolve("Bad Name")


def test_tag_untag_list_remove(store: ImageStore, tmp_path: Path) -> None:
    img, _, _ = make_image(store, tmp_path, "app:1")
    store.tag("app:1", "app:2")
    store.tag(img.short_id, "other/app")
    refs = sorted(i.ref for i in store.list())
    assert refs == ["app:1", "app:2", "other/app:latest"]
    assert store.resolve("app:2").digest == img.digest
    with pytest.raises(ImageError):
        store.remove(img.short_id)  # several tags, by id: needs force
    assert store.remove("app:1") == ["untagged: app:1"]
    store.untag("app:2")
    assert [i.ref for i in store.list()] == ["other/app:latest"]
    out = store.remove("other/app")
    assert out == ["untagged: other/app:latest", f"deleted: {img.digest}"]
    assert store.list() == []
    with pytest.raises(ImageNotFound):
        store.resolve(img.digest)


def test_untag_last_keeps_untagged_image(store: ImageStore, tmp_path: Path) -> None:
    img, _, _ = make_image(store, tmp_path, "app:1")
    store.untag("app:1")
    assert [(i.ref, i.digest) for i in store.list()] == [(None, img.digest)]
    assert store.remove(img.short_id, force=True) == [f"deleted: {img.digest}"]


def test_retag_moves_the_tag(store: ImageStore, tmp_path: Path) -> None:
    a, _, _ = make_image(store, tmp_path, "app:1", b"a")
    b, _, _ = make_image(store, tmp_path, "app:1", b"b")
    assert a.digest != b.digest
    assert store.resolve("app:1").digest == b.digest
    assert {i.digest for i in store.list()} == {b.digest}  # a lost its only tag and was dropped from the index


def test_prune(store: ImageStore, tmp_path: Path) -> None:
    a, da, la = make_image(store, tmp_path, "a:1", b"a")
    b, db, lb = make_image(store, tmp_path, "b:1", b"b")
    store.remove("a:1")
    res = store.prune(keep_layers={la})
    assert res["blobs"] == 3  # manifest, config, layer blob of a
    assert res["layers"] == 0 and store.has_layer(la)  # kept: still used by a container
    assert not store.has_blob(da["digest"]) and store.has_blob(db["digest"])
    assert store.prune()["layers"] == 1 and not store.has_layer(la)
    assert store.has_layer(lb) and store.resolve("b:1").digest == b.digest


def test_missing_layer_names_the_fix(store: ImageStore, tmp_path: Path) -> None:
    img, _, diff_id = make_image(store, tmp_path, "app:1")
    subprocess.run(["rm", "-rf", str(Path(store.layer_dir(diff_id)))], check=True)
    with pytest.raises(ImageError) as ei:
        store.layer_dirs(img)
    assert "devbox pull" in ei.value.hint
    assert store.ensure_layers(img) == [store.layer_dir(diff_id)]  # re-unpacked from the blob


def test_stale_tmp_is_cleaned(store: ImageStore, tmp_path: Path) -> None:
    make_image(store, tmp_path, "app:1")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = Path(store.tmp) / f"layer-{dead.pid}-12345-abcdef123456"
    (stale / "sub").mkdir(parents=True)
    os.symlink("/etc", stale / "sub/evil")
    mine = Path(store.temp_dir("layer"))  # owner alive: kept
    other = Path(store.tmp) / "someone-elses-file"
    other.write_text("x")
    removed = store.clean_tmp()
    assert str(stale) in removed and not stale.exists() and os.path.exists("/etc/passwd")
    assert mine.exists() and other.exists()
    os.rmdir(mine)


def test_layer_registration_is_idempotent(store: ImageStore, tmp_path: Path) -> None:
    data = make_tar([entry("x", data=b"1")])
    blob = store.put_blob_bytes(data)
    d1 = store.unpack_layer(blob, "application/vnd.oci.image.layer.v1.tar", None)
    d2 = store.unpack_layer(blob, "application/vnd.oci.image.layer.v1.tar", None)  # extracts again, loses the race
    assert d1 == d2 and os.listdir(store.tmp) == []
    assert store.unpack_layer(blob, "application/vnd.oci.image.layer.v1.tar", d1) == d1


def test_ensure_image(store: ImageStore, tmp_path: Path) -> None:
    make_image(store, tmp_path, "app:1")
    assert ensure_image(store, "app:1").ref == "app:1"
    with pytest.raises(ImageNotFound) as ei:
        ensure_image(store, "quay.io/x/y:2")
    # not local, not a Debian bootstrap: ensure_image tries the registry, which is unreachable here
    assert "quay.io" in ei.value.message and "unreachable" in ei.value.message
    assert "devbox image import" in (ei.value.hint or "")


def test_add_manifest_with_annotations_and_expected_digest(store: ImageStore, tmp_path: Path) -> None:
    img, _, _ = make_image(store, tmp_path, "app:1")
    raw = store.read_blob(img.digest)
    with pytest.raises(ImageError):
        store.add_manifest(raw, "app:2", expected="sha256:" + "2" * 64)
    got = store.add_manifest(raw, "app:2", expected=img.digest, annotations={"io.devbox.source": "reg/app:2"})
    assert got.digest == img.digest and got.ref == "app:2"
    index = json.loads((Path(store.images) / "index.json").read_text())
    entry2 = [e for e in index["manifests"] if e["annotations"].get("org.opencontainers.image.ref.name") == "app:2"]
    assert entry2[0]["annotations"]["io.devbox.source"] == "reg/app:2"


def test_kill_9_during_extraction_registers_nothing(store: ImageStore, tmp_path: Path) -> None:
    import gzip
    import signal
    import time

    big = make_tar([entry(f"d/f{i}", data=os.urandom(256 << 10)) for i in range(400)])  # 100 MiB
    blob = store.put_blob_bytes(gzip.compress(big, compresslevel=1))
    code = ("import sys; from devbox.runtime.image.store import ImageStore; "
            f"ImageStore({str(store.root)!r}).unpack_layer({blob!r}, 'application/vnd.oci.image.layer.v1.tar+gzip', None)")  # fmt: skip
    p = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(n.startswith("layer-") for n in os.listdir(store.tmp)):
        time.sleep(0.01)
    time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert os.listdir(store.layers) == []  # nothing registered
    assert any(n.startswith("layer-") for n in os.listdir(store.tmp))  # half-made scratch left behind...
    ImageStore(store.root).put_blob_bytes(b"any store operation")
    assert not any(n.startswith("layer-") for n in os.listdir(store.tmp))  # ...and removed by the next operation


def test_list_survives_a_broken_image(store: ImageStore, tmp_path: Path) -> None:
    a, _, _ = make_image(store, tmp_path, "a:1", b"a")
    b, _, _ = make_image(store, tmp_path, "b:1", b"b")
    os.unlink(Path(store.blob_path(a.digest)))
    assert [i.ref for i in store.list()] == ["b:1"]
    with pytest.raises(ImageError):
        store.resolve("a:1")
