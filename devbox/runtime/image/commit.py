"""Commit a container's changes (its overlay upper dir) as a new image layer.

    upper dir --(walk, skipping what the engine put there)--> layer tar (OCI whiteouts)
              --> store.add_layer_tar (gzip blob + unpacked layer) --> config + manifest --> tag

What is never part of a committed layer:
  - the engine's own mount targets /etc/hosts, /etc/hostname, /etc/resolv.conf, and /proc, /sys, /dev,
    when the engine created them (empty, and the lower layers do not have them);
  - the target of every bind or tmpfs mount of the container (e.g. a box's /run/devbox and
    /var/log/devbox), when the engine created it, and anything under such a target (the container
    never saw it: the mount hides it).

A running container is frozen (cgroup freezer) while its upper dir is read, so the layer is one
consistent point in time, as `docker commit` pauses; it is thawed before the layer is compressed.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import re
import stat
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from devbox import errors
from devbox.log import log
from devbox.runtime.image import reference, unpack
from devbox.runtime.image.store import (
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    Image,
    ImageStore,
)

ENGINE_FILES = ("etc/hosts", "etc/hostname", "etc/resolv.conf")
ENGINE_DIRS = ("proc", "sys", "dev")
BASE_DIGEST_ANNOTATION = "org.opencontainers.image.base.digest"
BASE_NAME_ANNOTATION = "org.opencontainers.image.base.name"
LOWER_IMAGE_LABEL = "devbox.lower-image"  # container label: the image whose layers are its lowerdirs

_OCI_MEDIA = {
    DOCKER_LAYER: OCI_LAYER,
    DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}  # fmt: skip


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- what to leave out ------------------------------------------------------------------------------


def _in_lower(lowers: list[Path], rel: str) -> bool:
    """Whether the merged lower layers (highest first) have `rel` (a whiteout above hides it)."""
    for layer in lowers:
        try:
            st = os.lstat(layer / rel)
        except (FileNotFoundError, NotADirectoryError):
            continue
        return not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0)
    return False


def _engine_made(upper: Path, rel: str, lowers: list[Path]) -> bool:
    """An empty file or directory in the upper dir that only exists because the engine mounted on it."""
    try:
        st = os.lstat(upper / rel)
    except (FileNotFoundError, NotADirectoryError):
        return False
    if stat.S_ISREG(st.st_mode):
        empty = st.st_size == 0
    elif stat.S_ISDIR(st.st_mode):
        try:
            empty = not os.listdir(upper / rel)
        except OSError:
            empty = False
    else:
        return False
    return empty and not _in_lower(lowers, rel)


def exclusions(upper: Path, lowers: list[Path], mount_targets: list[str]) -> Callable[[str], bool]:
    """A predicate on upper-relative paths: True for what a commit must leave out.

    `lowers`: unpacked lower layers, highest first; `mount_targets`: absolute paths of the container's
    bind/tmpfs mounts."""
    skip_exact: set[str] = set()
    hidden: list[str] = []
    for rel in ENGINE_FILES + ENGINE_DIRS:
        if _engine_made(upper, rel, lowers):
            skip_exact.add(rel)
    for target in mount_targets:
        rel = os.path.normpath(target).strip("/")
        if not rel or rel == ".":
            continue
        hidden.append(rel + "/")
        if _engine_made(upper, rel, lowers):
            skip_exact.add(rel)

    def skip(rel: str) -> bool:
        return rel in skip_exact or any(rel.startswith(h) for h in hidden)

    return skip


# --- upper dir -> layer tar -------------------------------------------------------------------------


class _HashFile:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.h = hashlib.sha256()

    def write(self, b: bytes) -> int:
        self.h.update(b)
        return self.f.write(b)

    def tell(self) -> int:
        return self.f.tell()


def layer_tar(upper: Path, out: Path, skip: Callable[[str], bool] | None = None) -> str:
    """Like unpack.tar_from_dir (same entries, same order), leaving out paths `skip` says; returns the
    DiffID. Overlay whiteouts become `.wh.` entries, opaque directories get `.wh..wh..opq`."""
    add_entry = unpack._add_entry  # the one place that turns an upper-dir entry into tar entries
    seen: dict[tuple[int, int], str] = {}
    with open(out, "wb") as raw:
        hf = _HashFile(raw)
        with tarfile.open(fileobj=hf, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
            for dirpath, dirnames, filenames, dfd in os.fwalk(upper, follow_symlinks=False):
                rel_dir = os.path.relpath(dirpath, upper)
                rel_dir = "" if rel_dir == "." else rel_dir
                names = sorted(dirnames + filenames)
                if skip is not None:
                    names = [n for n in names if not skip(f"{rel_dir}/{n}" if rel_dir else n)]
                keep = set(names)
                dirnames[:] = sorted(d for d in dirnames if d in keep)
                for name in names:
                    add_entry(tf, dfd, rel_dir, name, seen)
    return "sha256:" + hf.h.hexdigest()


@contextlib.contextmanager
def frozen(container: Any, pause: bool = True) -> Iterator[bool]:
    """Freeze a running container's cgroup for the block; yields whether it is frozen."""
    from devbox.runtime import container as ct

    if not pause or container.refresh() != ct.RUNNING:
        yield False
        return
    from devbox.runtime import cgroups

    cg = cgroups.manager_for(container.id)
    ok = False
    try:
        ok = cg.freeze()
        if not ok:
            log.warning("could not freeze %s; committing it while it runs", container.name)
        yield ok
    finally:
        with contextlib.suppress(Exception):
            cg.thaw()


# --- the commit -------------------------------------------------------------------------------------


def lower_image(store: ImageStore, container: Any) -> Image:
    """The image whose layers are the container's lowerdirs (its image, or the snapshot it was restored
    from)."""
    want = list(container.spec.diff_ids)
    for cand in (container.spec.labels.get(LOWER_IMAGE_LABEL), container.spec.image_digest):
        if not cand:
            continue
        try:
            img = store.resolve(cand)
        except errors.ImageNotFound:
            continue
        if img.diff_ids == want:
            return img
    raise errors.ImageNotFound(
        f"the image of container {container.name} ({container.spec.image}) is no longer in the store",
        hint="a commit needs the container's lower layers' image; pull or re-import it",
    )


def oci_descriptors(img: Image) -> list[dict[str, Any]]:
    out = []
    for d in img.layers:
        out.append({"mediaType": _OCI_MEDIA.get(d.get("mediaType", ""), d.get("mediaType") or OCI_LAYER_GZIP),
                    "digest": d["digest"], "size": int(d["size"])})  # fmt: skip
    return out


def default_name(container_name: str) -> str:
    """`<container name>-commit:latest`, with what a repository name cannot hold replaced by `-`."""
    n = re.sub(r"[^a-z0-9._-]+", "-", container_name.lower())
    n = re.sub(r"[._-]{2,}", "-", n).strip("._-") or "container"
    return f"{n}-commit:latest"


def commit(store: ImageStore, container: Any, ref: str | None = None, *, message: str | None = None,
           author: str | None = None, pause: bool = True, created_by: str = "devbox commit",
           annotations: dict[str, str] | None = None) -> Image:  # fmt: skip
    """Commit `container`'s upper dir on top of its lower image; tag the result `ref` (None: untagged)."""
    norm = reference.normalize(ref) if ref else None  # a bad name fails before any work
    with store.transaction():
        parent = lower_image(store, container)
        lowers = [Path(p) for p in reversed(store.ensure_layers(parent))]
        upper = Path(container.upper)
        if not upper.is_dir():
            raise errors.IncorrectStatus(f"container {container.name} has no writable layer",
                                         hint="its state directory is incomplete; recreate it")  # fmt: skip
        targets = [m.target for m in container.spec.mounts]
        tar = Path(store.temp_path("tar"))
        try:
            t0 = time.monotonic()
            with frozen(container, pause):
                skip = exclusions(upper, lowers, targets)
                diff_id = layer_tar(upper, tar, skip)
            log.debug("layer tar of %s in %.2fs", container.name, time.monotonic() - t0)
            desc, got = store.add_layer_tar(tar)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tar)
        if got != diff_id:
            raise errors.ImageError(f"commit of {container.name}: layer DiffID changed while it was stored",
                                    hint="this is a bug; nothing was tagged")  # fmt: skip
        cfg = copy.deepcopy(parent.config)
        cfg["created"] = now_iso()
        cfg.setdefault("config", {})
        cfg.setdefault("os", "linux")
        cfg["rootfs"] = {"type": "layers", "diff_ids": list(parent.diff_ids) + [diff_id]}
        hist: dict[str, Any] = {"created": cfg["created"], "created_by": created_by}
        if message:
            hist["comment"] = message
        if author:
            hist["author"] = author
            cfg["author"] = author
        cfg["history"] = list(cfg.get("history") or []) + [hist]
        ann = {BASE_DIGEST_ANNOTATION: parent.digest}
        if parent.ref:
            ann[BASE_NAME_ANNOTATION] = parent.ref
        ann.update(annotations or {})
        return store.write_image(cfg, oci_descriptors(parent) + [desc], norm, annotations=ann)
