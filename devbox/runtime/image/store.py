"""The image store: an OCI image layout plus a cache of unpacked layers.

  images/oci-layout, images/index.json        one entry per tag (annotation org.opencontainers.image.ref.name
                                               = normalized ref) and one per untagged image
  images/blobs/sha256/<hex>                    manifests, configs, layer blobs; verified before they land
  layers/<diffid hex>/                         unpacked layers (overlay lowerdirs, read-only by convention)
  tmp/<kind>-<pid>-<starttime>-<rand>          scratch; removed by the next store operation once the
                                               owning process is gone

Invariants: a blob appears only by a rename after its sha256 was checked; a layer directory appears
only by a rename after its DiffID was checked; index.json changes under an flock with atomic writes.
Operations that add content hold the gc lock shared, `prune` holds it exclusive, so prune never deletes
blobs or layers of an import, pull or build in progress (wrap multi-step work in `store.transaction()`).
"""

from __future__ import annotations

import builtins
import errno
import os
import time

from devbox import cjson, fsutil, paths
from devbox.errors import ConfigError, ImageError, ImageNotFound
from devbox.log import log
from devbox.record import field, record
from devbox.runtime import linux
from devbox.runtime.image import reference
from devbox.textmatch import LOWER_HEX, only

TYPE_CHECKING = False  # typing costs ~4 ms to import; only type checkers need it here
if TYPE_CHECKING:
    from typing import Any

    from devbox.paths import StrPath

OCI_LAYOUT_VERSION = "1.0.0"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
LAYER_TYPES = (OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER, DOCKER_LAYER_GZIP,
               "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
               "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip")  # fmt: skip
REF_ANNOTATION = "org.opencontainers.image.ref.name"

GZIP_LEVEL = 1  # commit/build layers: speed over size
TMP_KINDS = ("layer", "blob", "tar", "import", "export", "bootstrap")
TMP_MAX_AGE = 24 * 3600  # even a live owner's scratch is removed after this long
def digest_hex(digest: str) -> str:
    """`sha256:<64 hex>` -> `<64 hex>`."""
    if not reference.is_digest(digest or ""):
        raise ImageError(f"bad digest {digest!r}", hint="digests look like sha256:<64 hex digits>")
    return digest[len("sha256:") :]


def sha256_file(path: StrPath) -> tuple[str, int]:
    import hashlib  # OpenSSL's sha256 for large files; loaded only when hashing them

    h = hashlib.sha256()
    n = 0
    with open(path, "rb", buffering=0) as f:
        while b := f.read(1 << 20):
            h.update(b)
            n += len(b)
    return "sha256:" + h.hexdigest(), n


def canonical_json(obj: Any) -> bytes:
    return cjson.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def layer_compression(media_type: str) -> str | None:
    """'gzip', 'zstd', 'none', or None (decide from the content) for a layer media type."""
    if media_type.endswith(("+gzip", ".gzip")):
        return "gzip"
    if media_type.endswith("+zstd"):
        return "zstd"
    if media_type.endswith((".tar", "v1.tar")):
        return "none"
    return None


@record(frozen=True)
class Image:
    ref: str | None  # normalized reference it was resolved by (None when resolved by digest)
    digest: str  # manifest digest: the image's identity
    manifest: dict[str, Any] = field(repr=False)
    config: dict[str, Any] = field(repr=False)
    created: str | None = None

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config.get("rootfs", {}).get("diff_ids", []))

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("layers", []))

    @property
    def short_id(self) -> str:
        return self.digest.split(":", 1)[-1][:12]

    @property
    def size(self) -> int:
        """Bytes of the blobs (config + compressed layers)."""
        return int(self.manifest.get("config", {}).get("size", 0)) + sum(int(x.get("size", 0)) for x in self.layers)

    @property
    def container_config(self) -> dict[str, Any]:
        return dict(self.config.get("config") or {})


class ImageStore:
    """Paths here are plain strings, as everywhere `devbox run` goes (paths.py says why)."""

    def __init__(self, root: StrPath | None = None) -> None:
        self.root = os.fspath(root) if root is not None else paths.state_root()
        self.images = paths.images_dir(self.root)
        self.blobs = os.path.join(self.images, "blobs", "sha256")
        self.layers = paths.layers_dir(self.root)
        self.tmp = paths.tmp_dir(self.root)
        self._index = os.path.join(self.images, "index.json")
        self._index_lock = os.path.join(paths.locks_dir(self.root), "images.lock")
        self._gc_lock = os.path.join(paths.locks_dir(self.root), "images-gc.lock")
        self._ready = False

    # --- setup, scratch space and locks ------------------------------------------------------------

    def _prepare(self) -> None:
        if self._ready:
            return
        for d in (self.blobs, self.layers, self.tmp):
            os.makedirs(d, exist_ok=True)
        layout = os.path.join(self.images, "oci-layout")
        if not os.path.exists(layout):
            fsutil.write_json(layout, {"imageLayoutVersion": OCI_LAYOUT_VERSION})
        if not os.path.exists(self._index):
            with fsutil.locked(self._index_lock):
                if not os.path.exists(self._index):
                    self._write_index([])
        self.clean_tmp()
        self._ready = True

    def temp_path(self, kind: str) -> str:
        """A fresh scratch path under tmp/ (not created), removed later if its owner dies."""
        if kind not in TMP_KINDS:
            raise ValueError(f"unknown temp kind {kind!r}")
        os.makedirs(self.tmp, exist_ok=True)
        pid = os.getpid()
        return os.path.join(self.tmp, f"{kind}-{pid}-{linux.proc_start_time(pid) or 0}-{os.urandom(6).hex()}")

    def temp_dir(self, kind: str) -> str:
        p = self.temp_path(kind)
        os.mkdir(p, 0o755)
        return p

    def clean_tmp(self) -> list[str]:
        """Remove scratch entries whose owning process is gone (or that are older than a day)."""
        removed: list[str] = []
        try:
            names = os.listdir(self.tmp)
        except FileNotFoundError:
            return removed
        now = time.time()
        for name in names:
            parts = name.split("-")
            if len(parts) != 4 or parts[0] not in TMP_KINDS:
                continue
            p = os.path.join(self.tmp, name)
            try:
                pid, start = int(parts[1]), int(parts[2])
                age = now - os.lstat(p).st_mtime
            except (ValueError, OSError):
                continue
            alive = linux.proc_start_time(pid) == start if start else os.path.exists(f"/proc/{pid}")
            if alive and age < TMP_MAX_AGE:
                continue
            log.debug("removing stale scratch %s", p)
            _remove_path(p)
            removed.append(p)
        return removed

    def transaction(self) -> _Transaction:
        """Hold off `prune` while a multi-step import/pull/build adds blobs and layers."""
        return _Transaction(self)

    # --- blobs -------------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> str:
        return os.path.join(self.blobs, digest_hex(digest))

    def has_blob(self, digest: str) -> bool:
        return os.path.isfile(self.blob_path(digest))

    def read_blob(self, digest: str) -> bytes:
        try:
            with open(self.blob_path(digest), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ImageError(f"blob {digest} is missing from the image store",
                             hint="pull or import the image again") from None  # fmt: skip

    def put_blob_bytes(self, data: bytes, expected: str | None = None) -> str:
        digest = "sha256:" + fsutil.sha256_hex(data)
        if expected is not None and expected != digest:
            raise ImageError(f"digest mismatch: expected {expected}, got {digest}",
                             hint="the content is corrupt or was tampered with; nothing was stored")  # fmt: skip
        with self.transaction():
            dst = self.blob_path(digest)
            if not os.path.exists(dst):
                tmp = self.temp_path("blob")
                try:
                    with open(tmp, "xb") as f:
                        f.write(data)
                    os.chmod(tmp, 0o644)
                    os.rename(tmp, dst)
                except BaseException:
                    _remove_path(tmp)
                    raise
        return digest

    def put_blob_file(self, path: StrPath, expected: str | None = None) -> str:
        """Verify `path`'s sha256 and move it into blobs/ (copied first when it is not under tmp/)."""
        path = os.fspath(path)
        with self.transaction():
            own = _is_under(path, self.tmp)
            src = path
            if not own:
                src = self.temp_path("blob")
                import shutil

                shutil.copyfile(path, src)
            try:
                digest, _ = sha256_file(src)
                if expected is not None and expected != digest:
                    raise ImageError(f"digest mismatch for {os.path.basename(path)}: expected {expected}, got {digest}",
                                     hint="the download or archive is corrupt; nothing was stored")  # fmt: skip
                dst = self.blob_path(digest)
                if os.path.exists(dst):
                    _remove_path(src)
                else:
                    os.chmod(src, 0o644)
                    os.rename(src, dst)
            except BaseException:
                _remove_path(src)
                raise
        return digest

    # --- layers ------------------------------------------------------------------------------------

    def layer_dir(self, diff_id: str) -> str:
        return os.path.join(self.layers, digest_hex(diff_id))

    def has_layer(self, diff_id: str) -> bool:
        return os.path.isdir(self.layer_dir(diff_id))

    def _register_layer(self, tmp: StrPath, diff_id: str) -> None:
        final = self.layer_dir(diff_id)
        try:
            os.rename(tmp, final)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            _remove_path(tmp)  # another process registered the same layer first

    def unpack_layer(self, blob_digest: str, media_type: str, diff_id: str | None) -> str:
        """Safely extract a layer blob into layers/<diffid>/ and return its DiffID (idempotent)."""
        if diff_id is not None and self.has_layer(diff_id):
            return diff_id
        if media_type and media_type not in LAYER_TYPES and "tar" not in media_type:
            raise ImageError(f"unsupported layer media type {media_type!r}",
                             hint="devbox handles tar, tar+gzip and tar+zstd layers")  # fmt: skip
        blob = self.blob_path(blob_digest)
        if not os.path.isfile(blob):
            raise ImageError(f"layer blob {blob_digest} is missing", hint="pull or import the image again")
        with self.transaction():
            tmp = self.temp_dir("layer")
            try:
                t0 = time.monotonic()
                from devbox.runtime.image import unpack  # only when a layer is new: not on run's path

                res = unpack.unpack_file(blob, tmp, None)  # compression from the content, not the media type
                log.debug("unpacked %s (%d entries, %d bytes) in %.2fs", blob_digest[:19], res.entries,
                          res.size, time.monotonic() - t0)  # fmt: skip
                if diff_id is not None and res.diff_id != diff_id:
                    raise ImageError(f"layer {blob_digest[:19]}: DiffID mismatch (expected {diff_id}, got {res.diff_id})",
                                     hint="the image is corrupt or was tampered with; nothing was registered")  # fmt: skip
                self._register_layer(tmp, res.diff_id)
            except BaseException:
                _remove_path(tmp)
                raise
        return res.diff_id

    def add_layer_tar(self, tar_path: StrPath, compress: bool = True) -> tuple[dict[str, Any], str]:
        """Register the layer tar at `tar_path` (a tree as tar, e.g. from unpack.tar_from_dir).

        Returns (layer descriptor {mediaType, digest, size}, diff_id). The unpacked layer is registered
        too, so the layer is usable as a lowerdir at once.
        """
        tar_path = os.fspath(tar_path)
        from devbox.runtime.image import unpack

        kind = unpack.sniff_compression(tar_path)
        with self.transaction():
            tmp = self.temp_dir("layer")
            try:
                res = unpack.unpack_file(tar_path, tmp, kind)
                self._register_layer(tmp, res.diff_id)
            except BaseException:
                _remove_path(tmp)
                raise
            if kind == "none" and compress:
                gz = self.temp_path("blob")
                try:
                    _gzip_file(tar_path, gz, GZIP_LEVEL)
                    digest = self.put_blob_file(gz)
                except BaseException:
                    _remove_path(gz)
                    raise
                media = OCI_LAYER_GZIP
            else:
                digest = self.put_blob_file(tar_path)
                media = {"none": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}[kind]
        size = os.stat(self.blob_path(digest)).st_size
        return {"mediaType": media, "digest": digest, "size": size}, res.diff_id

    # --- index.json --------------------------------------------------------------------------------

    def _read_index(self) -> list[dict[str, Any]]:
        try:
            idx = fsutil.read_json(self._index)
        except FileNotFoundError:
            return []
        except (ValueError, OSError) as e:
            raise ImageError(f"image index {self._index} is unreadable: {e}",
                             hint="restore it, or remove the images directory and re-import") from None  # fmt: skip
        return list(idx.get("manifests", []))

    def _write_index(self, entries: list[dict[str, Any]]) -> None:
        entries = sorted(entries, key=lambda e: (_entry_ref(e) or "\uffff", e["digest"]))
        fsutil.write_json(self._index,
                          {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})  # fmt: skip

    def _load(self, digest: str, ref: str | None) -> Image:
        try:
            manifest = cjson.loads(self.read_blob(digest))
            config_digest = manifest["config"]["digest"]
            config = cjson.loads(self.read_blob(config_digest))
        except (KeyError, TypeError, ValueError) as e:
            raise ImageError(f"image {ref or digest} has a malformed manifest or config: {e}",
                             hint="remove it and pull or import it again") from None  # fmt: skip
        return Image(ref=ref, digest=digest, manifest=manifest, config=config, created=config.get("created"))

    def add_manifest(self, raw: bytes, ref: str | None = None, expected: str | None = None,
                     annotations: dict[str, str] | None = None) -> Image:  # fmt: skip
        """Register a manifest (OCI or Docker v2) whose config and layer blobs are already stored.

        `expected`: the digest the manifest must have; `annotations`: extra annotations for its index
        entry (e.g. where it was pulled from).
        """
        try:
            manifest = cjson.loads(raw)
            media = manifest.get("mediaType") or OCI_MANIFEST
            config_desc = manifest["config"]
            layers = manifest["layers"]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ImageError(f"malformed image manifest: {e}", hint="the image is corrupt") from None
        if media not in MANIFEST_TYPES:
            raise ImageError(f"unsupported manifest type {media!r}", hint="devbox stores OCI or Docker v2 manifests")
        config = cjson.loads(self.read_blob(config_desc["digest"]))
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        if len(diff_ids) != len(layers):
            raise ImageError(f"image config lists {len(diff_ids)} layers, the manifest {len(layers)}",
                             hint="the image is corrupt")  # fmt: skip
        for layer in layers:
            if not self.has_blob(layer["digest"]):
                raise ImageError(f"layer blob {layer['digest']} is missing", hint="pull or import the image again")
        norm = reference.normalize(ref) if ref else None
        with self.transaction():
            digest = self.put_blob_bytes(raw, expected)
            with fsutil.locked(self._index_lock):
                entries = self._read_index()
                desc: dict[str, Any] = {"mediaType": media, "digest": digest, "size": len(raw)}
                extra = {k: str(v) for k, v in (annotations or {}).items() if k != REF_ANNOTATION}
                if norm:
                    entries = [e for e in entries if _entry_ref(e) != norm]
                    entries = [e for e in entries if not (e["digest"] == digest and _entry_ref(e) is None)]
                    entries.append(dict(desc, annotations={**extra, REF_ANNOTATION: norm}))
                elif not any(e["digest"] == digest for e in entries):
                    entries.append(dict(desc, annotations=extra) if extra else desc)
                self._write_index(entries)
        return Image(ref=norm, digest=digest, manifest=manifest, config=config, created=config.get("created"))

    def write_image(self, config: dict[str, Any], layers: list[dict[str, Any]], ref: str | None = None,
                    annotations: dict[str, str] | None = None) -> Image:  # fmt: skip
        """Store `config` and a new OCI manifest over `layers` (descriptors of stored blobs); tag `ref`."""
        diff_ids = config.get("rootfs", {}).get("diff_ids")
        if diff_ids is None or len(diff_ids) != len(layers):
            raise ImageError("image config rootfs.diff_ids does not match the layers",
                             hint="this is a bug in the caller")  # fmt: skip
        config_raw = canonical_json(config)
        with self.transaction():
            config_digest = self.put_blob_bytes(config_raw)
            manifest: dict[str, Any] = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_raw)},
                "layers": [{"mediaType": x["mediaType"], "digest": x["digest"], "size": int(x["size"])} for x in layers],
            }
            if annotations:
                manifest["annotations"] = dict(annotations)
            return self.add_manifest(canonical_json(manifest), ref)

    # --- lookup ------------------------------------------------------------------------------------

    def _not_found(self, what: str) -> ImageNotFound:
        return ImageNotFound(f"image {what!r} not found in the local store",
                             hint=f"devbox image ls lists local images; get it with `devbox pull {what}`, "
                                  "`devbox image import` or `devbox image bootstrap debian:SUITE`")  # fmt: skip

    def resolve(self, ref_or_digest: str) -> Image:
        """Find an image by reference, full digest, NAME@digest, or a unique short-id prefix."""
        q = ref_or_digest.strip()
        entries = self._read_index()
        if reference.is_digest(q):
            if any(e["digest"] == q for e in entries):
                return self._load(q, None)
            raise self._not_found(q)
        try:
            ref = reference.parse(q)
        except ConfigError:
            ref = None
        if ref is not None:
            if ref.digest:
                if any(e["digest"] == ref.digest for e in entries):
                    return self._load(ref.digest, None)
                raise self._not_found(q)
            norm = str(ref)
            for e in entries:
                if _entry_ref(e) == norm:
                    return self._load(e["digest"], norm)
        prefix = q[len("sha256:") :] if q.startswith("sha256:") else q
        if len(prefix) >= 4 and only(prefix, LOWER_HEX):
            found = {e["digest"] for e in entries if digest_hex(e["digest"]).startswith(prefix)}
            if len(found) == 1:
                return self._load(found.pop(), None)
            if len(found) > 1:
                raise ImageError(f"short id {q!r} matches {len(found)} images", hint="give more digits")
        if ref is None:
            reference.parse(q)  # raise the parse error: it names what is wrong with the reference
        raise self._not_found(q)

    def list(self) -> list[Image]:  # noqa: A003
        out = []
        cache: dict[str, Image] = {}
        for e in self._read_index():
            d = e["digest"]
            if d not in cache:
                try:
                    cache[d] = self._load(d, None)
                except ImageError as err:  # one broken image must not hide the others
                    log.warning("skipping %s: %s", _entry_ref(e) or d, err)
                    continue
            img = cache[d]
            out.append(Image(ref=_entry_ref(e), digest=d, manifest=img.manifest, config=img.config,
                             created=img.created))  # fmt: skip
        return out

    def tags_of(self, digest: str) -> builtins.list[str]:
        return sorted(r for e in self._read_index() if e["digest"] == digest and (r := _entry_ref(e)))

    def tag(self, src: str, new_ref: str) -> Image:
        img = self.resolve(src)
        return self.add_manifest(self.read_blob(img.digest), new_ref, expected=img.digest)

    def untag(self, ref: str) -> None:
        norm = reference.normalize(ref)
        self._prepare()
        with fsutil.locked(self._index_lock):
            entries = self._read_index()
            mine = [e for e in entries if _entry_ref(e) == norm]
            if not mine:
                raise self._not_found(ref)
            rest = [e for e in entries if _entry_ref(e) != norm]
            for e in mine:
                if not any(x["digest"] == e["digest"] for x in rest):
                    rest.append({k: v for k, v in e.items() if k != "annotations"})
            self._write_index(rest)

    def remove(self, ref: str, force: bool = False) -> builtins.list[str]:
        """Untag `ref`; delete the manifest from the index when no tag is left. Blobs go with prune.

        By id/digest, an image with several tags needs `force` (then every tag goes).
        """
        img = self.resolve(ref)
        self._prepare()
        done: builtins.list[str] = []
        with fsutil.locked(self._index_lock):
            entries = self._read_index()
            tags = sorted(r for e in entries if e["digest"] == img.digest and (r := _entry_ref(e)))
            if img.ref is not None:
                drop = {img.ref}
            else:
                if len(tags) > 1 and not force:
                    raise ImageError(f"image {img.short_id} is tagged {', '.join(tags)}",
                                     hint="remove the tags one by one, or use -f to remove them all")  # fmt: skip
                drop = set(tags)
            rest = [e for e in entries if not (e["digest"] == img.digest and _entry_ref(e) in drop)]
            done += [f"untagged: {t}" for t in sorted(drop)]
            remaining = [e for e in rest if e["digest"] == img.digest]
            if not any(_entry_ref(e) for e in remaining):
                rest = [e for e in rest if e["digest"] != img.digest]
                done.append(f"deleted: {img.digest}")
            self._write_index(rest)
        return done

    def layer_dirs(self, image: Image) -> builtins.list[str]:
        """The unpacked layers of `image`, lowest first (overlay wants them highest first: reverse)."""
        out = []
        for d in image.diff_ids:
            p = self.layer_dir(d)
            if not os.path.isdir(p):
                name = image.ref or image.short_id
                raise ImageError(f"layer {d[:19]} of image {name} is not unpacked",
                                 hint=f"run `devbox pull {name}` or import/bootstrap it again")  # fmt: skip
            out.append(p)
        return out

    def ensure_layers(self, image: Image) -> builtins.list[str]:
        """Unpack any missing layer from its blob (e.g. after a prune of layers), then `layer_dirs`."""
        for desc, diff_id in zip(image.layers, image.diff_ids, strict=False):
            if not self.has_layer(diff_id) and self.has_blob(desc["digest"]):
                self.unpack_layer(desc["digest"], desc.get("mediaType", ""), diff_id)
        return self.layer_dirs(image)

    # --- garbage collection ------------------------------------------------------------------------

    def prune(self, keep_layers: set[str] | frozenset[str] = frozenset()) -> dict[str, int]:
        """Delete blobs and unpacked layers no manifest in the index references.

        `keep_layers`: DiffIDs still in use (e.g. by containers whose image was removed).
        """
        self._prepare()
        blobs_removed = layers_removed = freed = 0
        with fsutil.locked(self._gc_lock), fsutil.locked(self._index_lock):
            keep_blobs: set[str] = set()
            keep_diffs = {digest_hex(d) for d in keep_layers}
            for e in self._read_index():
                keep_blobs.add(digest_hex(e["digest"]))
                try:
                    img = self._load(e["digest"], None)
                except ImageError:
                    continue
                keep_blobs.add(digest_hex(img.manifest["config"]["digest"]))
                keep_blobs.update(digest_hex(x["digest"]) for x in img.layers)
                keep_diffs.update(digest_hex(d) for d in img.diff_ids)
            for name in os.listdir(self.blobs):
                if name not in keep_blobs:
                    p = os.path.join(self.blobs, name)
                    try:
                        freed += os.stat(p).st_size
                    except OSError:
                        pass
                    _remove_path(p)
                    blobs_removed += 1
            for name in os.listdir(self.layers):
                if name not in keep_diffs and len(name) == 64 and only(name, LOWER_HEX):
                    _remove_path(os.path.join(self.layers, name))
                    layers_removed += 1
        self.clean_tmp()
        return {"blobs": blobs_removed, "layers": layers_removed, "bytes": freed}


class _Transaction:
    """What `ImageStore.transaction()` returns: the store prepared and its gc lock held shared.

    A class rather than a contextlib.contextmanager: contextlib's import (functools, collections)
    costs ~3 ms of a `devbox run` that imports nothing else needing it."""

    __slots__ = ("store", "lock")

    def __init__(self, store: ImageStore) -> None:
        self.store = store
        self.lock: fsutil.locked | None = None

    def __enter__(self) -> ImageStore:
        store = self.store
        store._prepare()
        lock = fsutil.locked(store._gc_lock, shared=True)
        lock.__enter__()
        self.lock = lock
        return store

    def __exit__(self, *exc: object) -> None:
        lock, self.lock = self.lock, None
        if lock is not None:
            lock.__exit__(*exc)


def _entry_ref(e: dict[str, Any]) -> str | None:
    return (e.get("annotations") or {}).get(REF_ANNOTATION)


def _is_under(path: StrPath, parent: StrPath) -> bool:
    try:
        return os.path.realpath(path).startswith(os.path.realpath(parent) + os.sep)
    except OSError:
        return False


def _remove_path(p: StrPath) -> None:
    """Remove a file or a whole tree without following symlinks (the tree may be hostile)."""
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return
    if os.path.isdir(p) and not os.path.islink(p):
        fsutil.rmtree(p)
        if os.path.lexists(p):  # e.g. an immutable file; try harder once
            import subprocess

            subprocess.run(["rm", "-rf", "--one-file-system", os.fspath(p)], check=False)
    else:
        del st
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _gzip_file(src: StrPath, dst: StrPath, level: int) -> None:
    import zlib

    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    with open(src, "rb", buffering=0) as fi, open(dst, "xb") as fo:
        while b := fi.read(1 << 20):
            fo.write(c.compress(b))
        fo.write(c.flush())
