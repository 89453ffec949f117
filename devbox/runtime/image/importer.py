"""Import and export of image archives.

`import_archive` detects:
  - an OCI image layout directory (oci-layout + index.json);
  - an OCI archive (a tar of such a layout; `skopeo copy ... oci-archive:`);
  - a `docker save` archive (manifest.json [+ repositories]; both the classic <id>/layer.tar form and
    Docker 25's OCI-shaped form);
  - anything else that is a tar (.tar, .tar.gz, .tar.zst): a root filesystem, imported as one layer with
    a default config.
Archives are untrusted: they are unpacked with the same safe extractor as layers, and every blob's
digest (and every layer's DiffID) is verified before anything is registered.

`export_image` writes an OCI archive, or a docker-loadable archive (the OCI layout plus manifest.json
and repositories, as Docker 25 writes them).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import tarfile
from pathlib import Path
from typing import Any

from devbox.errors import ImageError, ImageNotFound
from devbox.runtime.image import reference, unpack
from devbox.runtime.image.store import (
    DOCKER_MANIFEST_LIST,
    LAYER_TYPES,
    MANIFEST_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    REF_ANNOTATION,
    Image,  # fmt: skip
    ImageStore,
    _remove_path,
    canonical_json,
    sha256_file,
)

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ARCHIVE_NAME = re.compile(r"^(\./)?(blobs(/sha256(/[0-9a-f]{64})?)?/?|index\.json|manifest\.json|oci-layout|"
                           r"repositories|[0-9a-f]{64}(\.json|\.tar|/|/layer\.tar|/json|/VERSION)?)$")  # fmt: skip
_COMPRESSED_MEDIA = {"none": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}


def go_arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(m, m)


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def default_config(diff_ids: list[str], created_by: str, cmd: list[str] | None = None, comment: str | None = None,
                   labels: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """An OCI image config for a rootfs made outside a build (import, bootstrap)."""
    created = now_iso()
    cfg: dict[str, Any] = {"Env": [DEFAULT_PATH], "Cmd": cmd or ["/bin/sh"]}
    if labels:
        cfg["Labels"] = dict(labels)
    hist: dict[str, Any] = {"created": created, "created_by": created_by}
    if comment:
        hist["comment"] = comment
    return {"created": created, "architecture": go_arch(), "os": "linux", "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": list(diff_ids)}, "history": [hist]}  # fmt: skip


# --- detection ----------------------------------------------------------------------------------------


def _peek_names(path: Path, limit: int = 64) -> list[str]:
    names: list[str] = []
    try:
        with unpack.open_decompressed(path) as r, tarfile.open(fileobj=r, mode="r|") as tf:  # type: ignore[call-overload]
            for m in tf:
                names.append(m.name)
                if len(names) >= limit:
                    break
    except tarfile.TarError as e:
        raise ImageError(f"{path} is not a tar archive: {e}",
                         hint="import takes a rootfs tar(.gz/.zst), a docker save archive, or an OCI archive/layout") from None  # fmt: skip
    return names


def detect(path: Path) -> str:
    """'oci-layout', 'archive' (docker save or OCI archive) or 'rootfs'."""
    path = Path(path)
    if path.is_dir():
        if (path / "oci-layout").is_file() and (path / "index.json").is_file():
            return "oci-layout"
        raise ImageError(f"{path} is a directory but not an OCI image layout",
                         hint="an OCI layout has oci-layout and index.json; or pass a tar file")  # fmt: skip
    if not path.is_file():
        raise ImageError(f"{path}: no such file", hint="check the path")
    names = _peek_names(path)
    if not names:
        raise ImageError(f"{path} is an empty tar archive", hint="nothing to import")
    if all(_ARCHIVE_NAME.match(n) for n in names):
        return "archive"
    return "rootfs"


# --- import -------------------------------------------------------------------------------------------


def import_archive(store: ImageStore, path: Path, ref: str | None) -> Image:
    """Import one image from `path` (see module doc) and tag it `ref` (or the archive's own name)."""
    images = load_archive(store, path, ref)
    return images[0]


def load_archive(store: ImageStore, path: Path, ref: str | None = None) -> list[Image]:
    """Import every image in `path`; with `ref`, the archive must hold exactly one, tagged `ref`."""
    path = Path(path)
    kind = detect(path)
    with store.transaction():
        if kind == "rootfs":
            if not ref:
                raise ImageError(f"{path} is a root filesystem tar: it needs a name",
                                 hint="devbox image import PATH NAME[:TAG]")  # fmt: skip
            return [_import_rootfs(store, path, ref)]
        if kind == "oci-layout":
            return _import_layout_dir(store, path, ref)
        tmp = Path(store.temp_dir("import"))
        try:
            with unpack.open_decompressed(path) as r:
                unpack.extract(r, tmp)
            if (tmp / "manifest.json").is_file():
                return _import_docker_dir(store, tmp, ref)
            if (tmp / "index.json").is_file():
                return _import_layout_dir(store, tmp, ref)
            raise ImageError(f"{path} has neither manifest.json nor index.json",
                             hint="not a docker save or OCI archive")  # fmt: skip
        finally:
            _remove_path(tmp)


def _import_rootfs(store: ImageStore, path: Path, ref: str) -> Image:
    kind = unpack.sniff_compression(path)
    blob = store.put_blob_file(path)
    media = _COMPRESSED_MEDIA[kind]
    diff_id = store.unpack_layer(blob, media, None)
    size = Path(store.blob_path(blob)).stat().st_size
    cfg = default_config([diff_id], created_by=f"devbox image import {path.name}", comment="imported rootfs")
    return store.write_image(cfg, [{"mediaType": media, "digest": blob, "size": size}], ref)


def _safe_file(root: Path, rel: str) -> Path:
    """`rel` inside `root`, refusing escapes: archives are untrusted (symlinks are followed only when
    they stay inside the archive, as docker save's <id>/layer.tar -> ../<hex>.tar do)."""
    if rel.startswith("/") or ".." in rel.split("/"):
        raise ImageError(f"archive refers to {rel!r} outside itself", hint="the archive is corrupt or hostile")
    real = os.path.realpath(root / rel)
    if not real.startswith(os.path.realpath(root) + os.sep):
        raise ImageError(f"archive entry {rel!r} points outside the archive", hint="the archive is corrupt or hostile")
    if not os.path.isfile(real) or os.path.islink(real):
        raise ImageError(f"archive entry {rel!r} is missing or not a regular file", hint="the archive is corrupt")
    return Path(real)


def _blob_file(root: Path, digest: str) -> Path:
    m = re.fullmatch(r"sha256:([0-9a-f]{64})", digest or "")
    if not m:
        raise ImageError(f"unsupported digest {digest!r} in archive", hint="only sha256 is supported")
    return _safe_file(root, f"blobs/sha256/{m.group(1)}")


def _register_image(store: ImageStore, config_raw: bytes, config_digest: str, layer_files: list[Path],
                    ref: str | None, manifest_raw: bytes | None = None,
                    manifest_digest: str | None = None) -> Image:  # fmt: skip
    """Verify and store config + layers (+ the original manifest when given), unpack, register."""
    config = json.loads(config_raw)
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(layer_files):
        raise ImageError(f"image config lists {len(diff_ids)} layers, the archive {len(layer_files)}",
                         hint="the archive is corrupt")  # fmt: skip
    store.put_blob_bytes(config_raw, config_digest)
    descs = []
    manifest = json.loads(manifest_raw) if manifest_raw else None
    for i, (lf, diff_id) in enumerate(zip(layer_files, diff_ids, strict=True)):
        expected = manifest["layers"][i]["digest"] if manifest else None
        digest = store.put_blob_file(lf, expected)
        media = manifest["layers"][i].get("mediaType") if manifest else _COMPRESSED_MEDIA[unpack.sniff_compression(Path(store.blob_path(digest)))]
        if media not in LAYER_TYPES:
            raise ImageError(f"unsupported layer media type {media!r}", hint="devbox handles tar layers")
        store.unpack_layer(digest, media, diff_id)
        descs.append({"mediaType": media, "digest": digest, "size": Path(store.blob_path(digest)).stat().st_size})
    if manifest_raw is not None:
        return store.add_manifest(manifest_raw, ref, expected=manifest_digest)
    cfg_media = OCI_CONFIG
    m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
         "config": {"mediaType": cfg_media, "digest": config_digest, "size": len(config_raw)}, "layers": descs}  # fmt: skip
    return store.add_manifest(canonical_json(m), ref)


def _import_docker_dir(store: ImageStore, root: Path, ref: str | None) -> list[Image]:
    try:
        entries = json.loads(_safe_file(root, "manifest.json").read_bytes())
        assert isinstance(entries, list) and entries
    except (ValueError, AssertionError):
        raise ImageError("docker archive has a malformed manifest.json", hint="the archive is corrupt") from None
    if ref and len(entries) != 1:
        raise ImageError(f"the archive holds {len(entries)} images; cannot name them all {ref}",
                         hint="use devbox image load to import them with their own names")  # fmt: skip
    out = []
    for e in entries:
        cfg_file = _safe_file(root, e["Config"])
        config_raw = cfg_file.read_bytes()
        config_digest, _ = sha256_file(cfg_file)
        hexname = re.search(r"([0-9a-f]{64})(\.json)?$", e["Config"])
        if hexname and "sha256:" + hexname.group(1) != config_digest:
            raise ImageError(f"config {e['Config']} does not match its digest", hint="the archive is corrupt")
        layers = [_safe_file(root, x) for x in e.get("Layers", [])]
        tags = [ref] if ref else list(e.get("RepoTags") or [])
        img = _register_image(store, config_raw, config_digest, layers, tags[0] if tags else None)
        for t in tags[1:]:
            store.tag(img.digest, t)
        out.append(img)
    return out


def _pick_manifests(root: Path, index: dict[str, Any]) -> list[tuple[dict[str, Any], str | None]]:
    """Manifest descriptors of an OCI index (descending into nested indexes for the host platform)."""
    out: list[tuple[dict[str, Any], str | None]] = []
    for d in index.get("manifests", []):
        ann = d.get("annotations") or {}
        name = ann.get("io.containerd.image.name") or ann.get(REF_ANNOTATION)
        if d.get("mediaType") in (OCI_INDEX, DOCKER_MANIFEST_LIST):
            sub = json.loads(_blob_file(root, d["digest"]).read_bytes())
            cands = [x for x in sub.get("manifests", []) if (x.get("platform") or {}).get("architecture") == go_arch()
                     and (x.get("platform") or {}).get("os", "linux") == "linux"]  # fmt: skip
            if not cands:
                raise ImageError(f"no linux/{go_arch()} image in the archive's index", hint="use an image for this machine")
            out.append((cands[0], name))
        else:
            out.append((d, name))
    return out


def _import_layout_dir(store: ImageStore, root: Path, ref: str | None) -> list[Image]:
    try:
        index = json.loads(_safe_file(root, "index.json").read_bytes())
    except ValueError:
        raise ImageError("OCI layout has a malformed index.json", hint="the archive is corrupt") from None
    picked = _pick_manifests(root, index)
    if not picked:
        raise ImageError("the OCI layout has no images", hint="nothing to import")
    if ref and len(picked) != 1:
        raise ImageError(f"the layout holds {len(picked)} images; cannot name them all {ref}",
                         hint="use devbox image load to import them with their own names")  # fmt: skip
    out = []
    for desc, name in picked:
        mf = _blob_file(root, desc["digest"])
        manifest_raw = mf.read_bytes()
        manifest_digest, _ = sha256_file(mf)
        if manifest_digest != desc["digest"]:
            raise ImageError(f"manifest {desc['digest'][:19]} does not match its digest", hint="the archive is corrupt")
        manifest = json.loads(manifest_raw)
        if (manifest.get("mediaType") or desc.get("mediaType") or OCI_MANIFEST) not in MANIFEST_TYPES:
            raise ImageError(f"unsupported manifest type {manifest.get('mediaType')!r}", hint="need an OCI or Docker v2 image")
        cfg_file = _blob_file(root, manifest["config"]["digest"])
        config_raw = cfg_file.read_bytes()
        layers = [_blob_file(root, x["digest"]) for x in manifest["layers"]]
        tag = ref
        if not tag and name:
            try:
                tag = reference.normalize(name) if ("/" in name or ":" in name) else None
            except Exception:
                tag = None
        out.append(_register_image(store, config_raw, manifest["config"]["digest"], layers, tag,
                                   manifest_raw, manifest_digest))  # fmt: skip
    return out


# --- export -------------------------------------------------------------------------------------------


def export_image(store: ImageStore, ref: str, out: Path, format: str = "oci") -> Image:
    """Write image `ref` to the tar `out`: an OCI archive, or (format="docker") docker-loadable."""
    if format not in ("oci", "docker"):
        raise ImageError(f"unknown archive format {format!r}", hint="use oci or docker")
    img = store.resolve(ref)
    tags = store.tags_of(img.digest)
    name = img.ref or (tags[0] if tags else None)
    out = Path(out)
    blobs = [img.digest, img.manifest["config"]["digest"]] + [x["digest"] for x in img.layers]
    for b in blobs:
        if not store.has_blob(b):
            raise ImageNotFound(f"blob {b[:19]} of {ref} is missing", hint=f"pull or import {ref} again")
    desc: dict[str, Any] = {"mediaType": img.manifest.get("mediaType") or OCI_MANIFEST, "digest": img.digest,
                            "size": Path(store.blob_path(img.digest)).stat().st_size}  # fmt: skip
    if name:
        full = reference.parse(name)
        desc["annotations"] = {"io.containerd.image.name": f"{full.registry}/{full.repository}:{full.tag or 'latest'}",
                               REF_ANNOTATION: full.tag or "latest"}  # fmt: skip
    files: dict[str, bytes] = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc]}).encode(),
    }
    if format == "docker":
        cfg_hex = img.manifest["config"]["digest"].split(":", 1)[1]
        files["manifest.json"] = json.dumps([{
            "Config": f"blobs/sha256/{cfg_hex}",
            "RepoTags": [name] if name else [],
            "Layers": [f"blobs/sha256/{x['digest'].split(':', 1)[1]}" for x in img.layers],
        }]).encode()  # fmt: skip
        if name:
            parsed = reference.parse(name)
            files["repositories"] = json.dumps({parsed.name: {parsed.tag or "latest": cfg_hex}}).encode()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
            for d in ("blobs", "blobs/sha256"):
                ti = tarfile.TarInfo(d)
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            seen = set()
            for b in blobs:
                if b in seen:
                    continue
                seen.add(b)
                p = Path(store.blob_path(b))
                ti = tarfile.TarInfo(f"blobs/sha256/{b.split(':', 1)[1]}")
                ti.size, ti.mode = p.stat().st_size, 0o644
                with open(p, "rb") as f:
                    tf.addfile(ti, f)
            for fname, data in files.items():
                ti = tarfile.TarInfo(fname)
                ti.size, ti.mode = len(data), 0o644
                import io

                tf.addfile(ti, io.BytesIO(data))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return img
