"""`devbox pull`: fetch an image from a registry into the store.

    manifest (or index -> the host platform's manifest) -> config -> layers, in parallel (4 at a time):
    each layer blob is streamed to tmp/, verified (size + sha256), moved into blobs/, then unpacked
    (store.unpack_layer checks the DiffID) while the other layers are still downloading.
    With DEVBOX_PULL_STREAM=1 a layer is also unpacked while it downloads (`_stream_layer`).
    Only when every layer is registered is the manifest added and the reference tagged.

Blobs and layers already in the store are not fetched again. A failure leaves no tag, no temp file,
and only verified, content-addressed blobs/layers (which `image prune` collects).

The registry digest (the digest the tag pointed to: the index for multi-platform images) is recorded in
`<state root>/cache/registry.json` (see `pulled_digest`), with the repository each blob came from, which
`push` uses for cross-repository mounts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform as _platform
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TextIO

from devbox import fsutil, paths
from devbox.errors import ConfigError, ImageError, ImageNotFound, RegistryError
from devbox.log import log
from devbox.runtime.image import reference, unpack
from devbox.runtime.image.registry import (
    INDEX_TYPES,
    Aborted,
    RegistryClient,
    RegistryConnectionError,
    ResumeUnsupported,
)
from devbox.runtime.image.store import LAYER_TYPES, Image, ImageStore, layer_compression

PARALLEL = 4
CONFIG_TYPES = ("application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json")
REGISTRY_DIGEST_ANNOTATION = "dev.devbox.registry.digest"
REGISTRY_REPO_ANNOTATION = "dev.devbox.registry.repository"
RECORD_FILE = "registry.json"


# --- platform ------------------------------------------------------------------------------------


def host_platform() -> tuple[str, str, str | None]:
    """(os, architecture, variant) of this machine in OCI terms: ("linux", "amd64", None)."""
    m = _platform.machine()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
            "armv6l": "arm", "i686": "386", "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x",
            "riscv64": "riscv64"}.get(m, m)  # fmt: skip
    variant = {"aarch64": "v8", "arm64": "v8", "armv7l": "v7", "armv6l": "v6"}.get(m)
    return "linux", arch, variant


def parse_platform(s: str) -> tuple[str, str, str | None]:
    parts = s.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(f"invalid platform {s!r}", hint="use OS/ARCH[/VARIANT], e.g. linux/arm64/v8")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def select_manifest(index: dict[str, Any], want: tuple[str, str, str | None], what: str) -> dict[str, Any]:
    """The descriptor for platform `want` in an OCI index / Docker manifest list.

    An exact variant match wins; then an entry without a variant; for arm64 a missing variant is v8.
    Attestation manifests (platform unknown/unknown) are ignored.
    """
    os_, arch, variant = want
    candidates: list[tuple[int, dict[str, Any]]] = []
    seen: list[str] = []
    for d in index.get("manifests") or []:
        if not isinstance(d, dict):
            continue
        p = d.get("platform") or {}
        if not p or (d.get("annotations") or {}).get("vnd.docker.reference.type") == "attestation-manifest":
            continue
        po, pa, pv = p.get("os"), p.get("architecture"), p.get("variant")
        seen.append("/".join(x for x in (po, pa, pv) if x))
        if po != os_ or pa != arch:
            continue
        if variant is None or pv == variant:
            score = 2 if pv == variant else 1
        elif pv is None or (arch == "arm64" and {pv, variant} <= {"v8", None}):
            score = 1
        else:
            continue
        if d.get("mediaType") in INDEX_TYPES:
            continue
        candidates.append((score, d))
    if not candidates:
        plat = "/".join(x for x in want if x)
        raise ImageNotFound(f"{what}: no image for platform {plat}",
                            hint=f"the image is built for: {', '.join(sorted(set(seen))) or 'no platform'}")  # fmt: skip
    candidates.sort(key=lambda t: -t[0])
    return candidates[0][1]


# --- progress ------------------------------------------------------------------------------------


class Progress:
    """One line per layer on stderr (a tty): `a1b2c3d4e5f6: downloading 12.3/80.1 MB`. Quiet otherwise."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.lines: dict[str, str] = {}
        self.order: list[str] = []
        self._drawn = 0
        self._last = 0.0
        self._lock = threading.Lock()

    def set(self, key: str, text: str, force: bool = True) -> None:
        if not self.enabled:
            return
        with self._lock:
            if key not in self.lines:
                self.order.append(key)
            self.lines[key] = text
            now = time.monotonic()
            if force or now - self._last > 0.1:
                self._last = now
                self._draw()

    def bytes(self, key: str, verb: str, done: int, total: int | None) -> None:
        tot = f"/{_mb(total)}" if total else ""
        self.set(key, f"{verb} {_mb(done)}{tot}", force=False)

    def _draw(self) -> None:
        out = "\x1b[A" * self._drawn if self._drawn else ""
        for k in self.order:
            out += f"\r\x1b[K{k[7:19] if k.startswith('sha256:') else k}: {self.lines[k]}\n"
        self._drawn = len(self.order)
        self.stream.write(out)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            with self._lock:
                self._draw()


def _mb(n: int | None) -> str:
    return f"{(n or 0) / 1e6:.1f} MB"


# --- records: registry digests and blob sources -----------------------------------------------------


def _record_path(root: Path | str) -> Path:
    return Path(paths.cache_dir(root), RECORD_FILE)


def _read_records(root: Path | str) -> dict[str, Any]:
    try:
        data = fsutil.read_json(_record_path(root))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _update_records(
    root: Path | str, pulled: dict[str, Any] | None = None, blobs: dict[str, str] | None = None
) -> None:
    """Merge `pulled` (ref -> info) and `blobs` (digest -> "registry/repository") into the record file."""
    path = _record_path(root)
    with fsutil.locked(os.path.join(paths.locks_dir(root), "registry-records.lock")):
        data = _read_records(root)
        data.setdefault("pulled", {}).update(pulled or {})
        src = data.setdefault("blob_sources", {})
        for d, where in (blobs or {}).items():
            lst = [x for x in src.get(d, []) if x != where]
            src[d] = ([where] + lst)[:4]
        fsutil.write_json(path, data)


def pulled_digest(ref: str, root: Path | str | None = None) -> str | None:
    """The registry digest `ref` had when it was last pulled (what a lockfile pins), or None."""
    rec = _read_records(root or paths.state_root()).get("pulled", {}).get(reference.normalize(ref))
    return rec.get("registry_digest") if isinstance(rec, dict) else None


def blob_sources(digest: str, root: Path | str | None = None) -> list[str]:
    """`registry/repository` names a blob was pulled from or pushed to (newest first)."""
    v = _read_records(root or paths.state_root()).get("blob_sources", {}).get(digest, [])
    return [x for x in v if isinstance(x, str)]


# --- pull ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _client(registry: str, client: RegistryClient | None) -> Iterator[RegistryClient]:
    if client is not None:
        yield client
        return
    c = RegistryClient(registry)
    try:
        yield c
    finally:
        c.close()


def resolve_digest(ref: str, client: RegistryClient | None = None) -> str:
    """Ask the registry which manifest digest `ref` names now (HEAD; no layers are downloaded)."""
    r = reference.parse(ref)
    if r.digest:
        return r.digest
    with _client(r.registry, client) as c:
        return c.manifest_digest(r.repository, r.tag or "latest")


def _check_manifest(m: dict[str, Any], what: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    cfg = m.get("config")
    layers = m.get("layers")
    if (
        not isinstance(cfg, dict)
        or not isinstance(layers, list)
        or not all(isinstance(x, dict) for x in layers)
    ):
        raise RegistryError(f"{what}: malformed manifest (no config or layers)", hint="the image is corrupt")
    for d in [cfg, *layers]:
        if not isinstance(d.get("digest"), str) or not reference.is_digest(d["digest"]) or not isinstance(d.get("size"), int) \
                or d["size"] < 0:  # fmt: skip
            raise RegistryError(f"{what}: malformed descriptor {json.dumps(d)[:120]}",
                                hint="devbox supports sha256 digests and needs sizes")  # fmt: skip
    if cfg.get("mediaType") and cfg["mediaType"] not in CONFIG_TYPES:
        raise RegistryError(f"{what}: config has media type {cfg['mediaType']!r}, not an image config",
                            hint="this is not a container image (an artifact such as a Helm chart?)")  # fmt: skip
    for x in layers:
        mt = x.get("mediaType") or ""
        if mt not in LAYER_TYPES:
            raise RegistryError(f"{what}: layer {x['digest'][:19]} has unsupported media type {mt!r}",
                                hint="devbox handles tar, tar+gzip and tar+zstd layers")  # fmt: skip
        if x.get("urls"):
            raise RegistryError(f"{what}: layer {x['digest'][:19]} is a foreign layer (urls)",
                                hint="foreign layers are not supported")  # fmt: skip
    return cfg, layers


def pull(store: ImageStore, ref: str, *, platform: str | None = None, progress: Progress | None = None,
         client: RegistryClient | None = None, parallel: int = PARALLEL) -> Image:  # fmt: skip
    """Pull `ref` ([REGISTRY/]NAME[:TAG|@sha256:DIGEST]) into `store`; returns the tagged Image."""
    r = reference.parse(ref)
    norm = reference.normalize(ref)
    tag_ref = str(reference.Reference(r.registry, r.repository, r.tag, None)) if r.tag else None
    want = parse_platform(platform) if platform else host_platform()
    prog = progress or Progress(enabled=False)
    where = f"{r.registry}/{r.repository}"
    with _client(r.registry, client) as c:
        top = c.get_manifest(r.repository, r.digest or r.tag or "latest", expected_digest=r.digest)
        man = top
        if top.media_type in INDEX_TYPES:
            desc = select_manifest(top.json(), want, norm)
            man = c.get_manifest(r.repository, desc["digest"])
            if man.media_type in INDEX_TYPES:
                raise RegistryError(
                    f"{norm}: nested image index", hint="devbox does not follow nested indexes"
                )
        m = man.json()
        cfg_desc, layers = _check_manifest(m, norm)
        with store.transaction():
            cfg_digest = cfg_desc["digest"]
            if store.has_blob(cfg_digest):
                cfg_raw = store.read_blob(cfg_digest)
            else:
                cfg_raw = c.get_blob_bytes(r.repository, cfg_digest)
            try:
                config = json.loads(cfg_raw)
                diff_ids = list(config["rootfs"]["diff_ids"])
            except (ValueError, KeyError, TypeError):
                raise RegistryError(f"{norm}: malformed image config", hint="the image is corrupt") from None
            if len(diff_ids) != len(layers) or not all(
                isinstance(d, str) and reference.is_digest(d) for d in diff_ids
            ):
                raise RegistryError(f"{norm}: config lists {len(diff_ids)} layers, the manifest {len(layers)}",
                                    hint="the image is corrupt")  # fmt: skip
            if config.get("os") not in (None, "linux"):
                raise ImageError(f"{norm}: image is for {config.get('os')}", hint="devbox runs linux images")
            store.put_blob_bytes(cfg_raw, expected=cfg_digest)
            _fetch_layers(store, c, r.repository, list(zip(layers, diff_ids)), prog, parallel)
            ann = {REGISTRY_DIGEST_ANNOTATION: top.digest, REGISTRY_REPO_ANNOTATION: where}
            img = store.add_manifest(man.raw, tag_ref, expected=man.digest, annotations=ann)
        prog.close()
    info = {"registry_digest": top.digest, "manifest_digest": man.digest, "repository": where,
            "pulled": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    recs = {norm: info}
    if tag_ref and tag_ref != norm:
        recs[tag_ref] = info
    by_digest = str(reference.Reference(r.registry, r.repository, None, top.digest))
    recs[by_digest] = info
    blobs = {cfg_digest: where, **{x["digest"]: where for x in layers}}
    try:
        _update_records(Path(store.root), recs, blobs)
    except OSError as e:  # the image is in the store; only the bookkeeping failed
        log.warning("could not record the registry digest of %s: %s", norm, e)
    return img


def _fetch_layers(store: ImageStore, c: RegistryClient, repo: str, items: list[tuple[dict[str, Any], str]],
                  prog: Progress, parallel: int) -> None:  # fmt: skip
    abort = threading.Event()

    def one(desc: dict[str, Any], diff_id: str) -> None:
        digest, size, media = desc["digest"], int(desc["size"]), desc.get("mediaType") or ""
        if store.has_layer(diff_id):
            prog.set(digest, "already exists")
            return
        if (
            not store.has_blob(digest)
            and _streaming()
            and layer_compression(media) in ("gzip", "zstd", "none")
        ):
            try:
                _stream_layer(store, c, repo, desc, diff_id, prog, abort)
                prog.set(digest, "done")
                return
            except (
                _RetryUnstreamed
            ) as e:  # verified blob, but the streamed unpack failed: retry from the blob
                log.debug("streamed unpack of %s failed (%s); unpacking from the blob", digest[:19], e)
            except ResumeUnsupported as e:  # start over, into a file first
                log.info("%s; downloading it again", e.message)
        if not store.has_blob(digest):
            tmp = Path(store.temp_path("blob"))
            try:
                prog.bytes(digest, "downloading", 0, size)
                c.download_blob(repo, digest, tmp, size, progress=lambda n: prog.bytes(digest, "downloading", n, size),
                                abort=abort)  # fmt: skip
                store.put_blob_file(tmp, expected=digest)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        if abort.is_set():
            return
        prog.set(digest, "unpacking")
        store.unpack_layer(digest, media, diff_id)
        prog.set(digest, "done")

    if not items:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(items))), thread_name_prefix="pull") as ex:
        futs = [ex.submit(one, d, i) for d, i in items]
        done, _ = wait(futs, return_when=FIRST_EXCEPTION)
        if any(f.exception() for f in done):
            abort.set()
            for f in futs:
                f.cancel()
        wait(futs)
    errors = [e for f in futs if not f.cancelled() and (e := f.exception())]
    if errors:
        first = next((e for e in errors if not isinstance(e, Aborted)), errors[0])
        raise first


ENV_STREAM = "DEVBOX_PULL_STREAM"


def _streaming() -> bool:
    """Off by default: on 2 busy cores the download thread and the (pure Python) extractor fight over
    the GIL and the overlap lost more than it won (bench/pull.py measures both)."""
    return os.environ.get(ENV_STREAM, "0") in ("1", "true", "yes")


class _RetryUnstreamed(Exception):
    pass


def _stream_layer(store: ImageStore, c: RegistryClient, repo: str, desc: dict[str, Any], diff_id: str,
                  prog: Progress, abort: threading.Event) -> None:  # fmt: skip
    """Download a layer blob and unpack it at the same time.

    A download thread writes each chunk to the blob's temp file (hashing it) and into a FIFO; the FIFO is
    the decompressor's input (unpack.open_decompressed), whose output the safe extractor unpacks into a
    temp layer directory. Only when the blob's size and sha256 and the layer's DiffID are verified are the
    blob and the layer renamed into the store. Raises _RetryUnstreamed when the blob is verified but the
    streamed unpack failed (then the caller unpacks from the stored blob and reports that error).
    """
    digest, size, media = desc["digest"], int(desc["size"]), desc.get("mediaType") or ""
    with store.transaction():
        fifo = Path(store.temp_path("blob"))
        blob_tmp = Path(store.temp_path("blob"))
        layer_tmp: Path | None = None
        os.mkfifo(fifo, 0o600)
        failure: list[BaseException] = []

        def download() -> None:
            try:
                with open(fifo, "wb", buffering=0) as w:  # blocks until the decompressor opens it
                    reader_gone = False

                    def sink(b: bytes) -> None:
                        # once the unpacker stops (an error), finish the download anyway: a verified blob
                        # lets the caller retry the unpack from the store (which sniffs the compression)
                        nonlocal reader_gone
                        mv = memoryview(b)
                        while mv and not reader_gone:
                            try:
                                mv = mv[w.write(mv) or 0 :]
                            except BrokenPipeError:
                                reader_gone = True

                    c.download_blob(repo, digest, blob_tmp, size, abort=abort, sink=sink,
                                    progress=lambda n: prog.bytes(digest, "downloading", n, size))  # fmt: skip
            except BaseException as e:  # noqa: B036 - reported by the joining thread
                failure.append(e)

        t = threading.Thread(target=download, name="pull-dl", daemon=True)
        try:
            layer_tmp = Path(store.temp_dir("layer"))
            prog.bytes(digest, "downloading", 0, size)
            t.start()
            unpack_error: BaseException | None = None
            res = None
            try:
                with unpack.open_decompressed(fifo, layer_compression(media)) as r:
                    res = unpack.extract(r, layer_tmp)
            except Exception as e:
                unpack_error = e
            finally:
                # the decompressor is gone; unblock a download thread still waiting to open the FIFO
                with contextlib.suppress(OSError):
                    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
            t.join()
            if failure:
                raise failure[0]
            # the blob is complete and verified (download_blob checks size and sha256)
            os.chmod(blob_tmp, 0o644)
            os.rename(blob_tmp, Path(store.blob_path(digest)))
            if unpack_error is not None or res is None:
                raise _RetryUnstreamed(str(unpack_error))
            if res.diff_id != diff_id:
                raise ImageError(f"layer {digest[:19]}: DiffID mismatch (expected {diff_id}, got {res.diff_id})",
                                 hint="the image is corrupt or was tampered with; nothing was registered")  # fmt: skip
            final = Path(store.layer_dir(diff_id))
            try:
                os.rename(layer_tmp, final)
                layer_tmp = None
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise  # otherwise another process registered the same layer first
        finally:
            if t.is_alive():
                abort.set()
                with contextlib.suppress(OSError):
                    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
                t.join()
            for p in (fifo, blob_tmp):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)
            if layer_tmp is not None:
                _remove_tree(store, layer_tmp)


def _remove_tree(store: ImageStore, p: Path) -> None:
    from devbox.runtime.image.store import _remove_path

    _remove_path(p)


def ensure_pulled(store: ImageStore, ref: str) -> Image:
    """The registry hook of `ensure_image`: a record from an earlier pull by digest, else pull `ref`.

    An unreachable registry becomes ImageNotFound (with the connection error in the hint); other
    registry errors (auth, 404, corrupt content) are raised as they are.
    """
    r = reference.parse(ref)
    if r.digest:
        rec = _read_records(Path(store.root)).get("pulled", {}).get(reference.normalize(ref))
        if isinstance(rec, dict) and rec.get("manifest_digest"):
            with contextlib.suppress(ImageNotFound):
                return store.resolve(rec["manifest_digest"])
    try:
        return pull(store, ref, progress=Progress())
    except RegistryConnectionError as e:
        norm = reference.normalize(ref)
        raise ImageNotFound(f"image {norm!r} is not in the local store and {r.registry} is unreachable",
                            hint=f"{e.message}; import it (`devbox image import`) or retry when the registry is reachable") from e  # fmt: skip


__all__ = ["Progress", "blob_sources", "ensure_pulled", "host_platform", "pull", "pulled_digest",
           "resolve_digest", "select_manifest"]  # fmt: skip
