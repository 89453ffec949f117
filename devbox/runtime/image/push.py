"""`devbox push`: upload an image of the store to a registry.

For each blob (config and layers, 4 at a time): HEAD first (present -> skipped); else a cross-repository
mount (`POST .../uploads/?mount=DIGEST&from=REPO`) when the blob is known to live in another repository
of the same registry (recorded by earlier pulls and pushes); else an upload: one PUT for blobs up to
`chunk_size` (32 MiB), PATCH chunks for bigger ones. Then the manifest is PUT, byte for byte as stored,
with its own media type, so the registry's digest equals the store's image id.
"""

from __future__ import annotations

from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devbox.errors import ConfigError, ImageError
from devbox.log import log
from devbox.runtime.image import reference
from devbox.runtime.image.pull import Progress, _client, _update_records, blob_sources
from devbox.runtime.image.registry import OCI_MANIFEST, RegistryClient
from devbox.runtime.image.store import ImageStore

CHUNK_SIZE = 32 << 20
PARALLEL = 4


@dataclass(frozen=True)
class PushResult:
    ref: str  # normalized destination reference
    digest: str  # manifest digest (the same in the store and in the registry)
    blobs: dict[str, str]  # digest -> "exists" | "mounted" | "uploaded"


def push(store: ImageStore, src: str, dest: str | None = None, *, progress: Progress | None = None,
         client: RegistryClient | None = None, chunk_size: int = CHUNK_SIZE, parallel: int = PARALLEL,
         mount: bool = True) -> PushResult:  # fmt: skip
    """Push image `src` (a local reference or id) as `dest` (default: `src` itself)."""
    img = store.resolve(src)
    target_s = dest or img.ref or src
    t = reference.parse(target_s)
    if t.digest:
        raise ConfigError(f"cannot push to a digest reference {target_s!r}", hint="push to NAME:TAG")
    tag = t.tag or "latest"
    norm = str(reference.Reference(t.registry, t.repository, tag, None))
    where = f"{t.registry}/{t.repository}"
    prog = progress or Progress(enabled=False)
    descs: list[dict[str, Any]] = [img.manifest["config"], *img.layers]
    for d in descs:
        if not store.has_blob(d["digest"]):
            raise ImageError(f"blob {d['digest'][:19]} of {img.ref or img.short_id} is missing from the store",
                             hint="pull or import the image again")  # fmt: skip
    raw = store.read_blob(img.digest)
    media = img.manifest.get("mediaType") or OCI_MANIFEST
    results: dict[str, str] = {}
    with _client(t.registry, client) as c:

        def one(d: dict[str, Any]) -> None:
            digest, size = d["digest"], int(d["size"])
            src_repo = None
            if mount:
                for s in blob_sources(digest, store.root):
                    reg, _, repo = s.partition("/")
                    if reg == t.registry and repo != t.repository:
                        src_repo = repo
                        break
            prog.bytes(digest, "pushing", 0, size)
            how = c.upload_blob(t.repository, Path(store.blob_path(digest)), digest, size, chunk_size=chunk_size,
                                mount_from=src_repo, progress=lambda n: prog.bytes(digest, "pushing", n, size))  # fmt: skip
            results[digest] = how
            prog.set(
                digest,
                {"exists": "already exists", "mounted": f"mounted from {src_repo}"}.get(how, "pushed"),
            )

        with ThreadPoolExecutor(
            max_workers=max(1, min(parallel, len(descs))), thread_name_prefix="push"
        ) as ex:
            futs = [ex.submit(one, d) for d in descs]
            done, _ = wait(futs, return_when=FIRST_EXCEPTION)
            if any(f.exception() for f in done):
                for f in futs:
                    f.cancel()
            wait(futs)
        errors = [e for f in futs if not f.cancelled() and (e := f.exception())]
        if errors:
            raise errors[0]
        digest = c.put_manifest(t.repository, tag, raw, media)
    prog.close()
    if digest != img.digest:  # cannot happen: the store's manifest digest is the sha256 of `raw`
        raise ImageError(f"pushed manifest digest {digest} differs from the image id {img.digest}",
                         hint="the image store is corrupt")  # fmt: skip
    try:
        _update_records(store.root, None, {d["digest"]: where for d in descs})
    except OSError as e:
        log.warning("could not record the blob sources of %s: %s", norm, e)
    return PushResult(norm, digest, results)
