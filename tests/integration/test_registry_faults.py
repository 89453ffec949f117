"""Hostile and broken registries: a stall, a dropped connection, a redirect to another host, wrong media
types, an oversized manifest, 429s. Small local servers on 127.0.0.x play the registry; every failure must
be one clear RegistryError, with nothing tagged and no temp file left."""

from __future__ import annotations

import gzip
import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from registry_fixture import layer_tar

from devbox.errors import RegistryError
from devbox.runtime.image import pull
from devbox.runtime.image.registry import RegistryClient, Timeouts, basic_header
from devbox.runtime.image.store import ImageStore

pytestmark = pytest.mark.root


def sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Image:
    def __init__(self, files: dict[str, bytes]) -> None:
        tar = layer_tar(files)
        self.layer = gzip.compress(tar, mtime=0)
        cfg = {"architecture": pull.host_platform()[1], "os": "linux", "config": {},
               "rootfs": {"type": "layers", "diff_ids": [sha(tar)]}}  # fmt: skip
        self.config = json.dumps(cfg).encode()
        self.manifest_doc: dict[str, Any] = {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(self.config),
                       "size": len(self.config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(self.layer),
                        "size": len(self.layer)}],
        }  # fmt: skip

    @property
    def manifest(self) -> bytes:
        return json.dumps(self.manifest_doc).encode()

    def blobs(self) -> dict[str, bytes]:
        return {sha(self.config): self.config, sha(self.layer): self.layer}


class FakeRegistry:
    """A minimal registry; `hook(handler) -> bool` may answer a request itself (True = handled)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.image = Image({"big.bin": bytes(range(256)) * 4096, "hello": b"fake\n"})
        self.hook: Callable[[BaseHTTPRequestHandler], bool] | None = None
        self.log: list[tuple[str, str, dict[str, str]]] = []
        self.basic: tuple[str, str] | None = None
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                outer.log.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                if outer.basic and self.headers.get("Authorization") != basic_header(*outer.basic):
                    self.send(401, b"{}", {"WWW-Authenticate": 'Basic realm="fake"'})
                    return
                if outer.hook and outer.hook(self):
                    return
                if self.path == "/v2/":
                    self.send(200, b"{}")
                elif "/manifests/" in self.path:
                    m = outer.image.manifest
                    self.send(200, m, {"Content-Type": outer.image.manifest_doc.get("mediaType", ""),
                                       "Docker-Content-Digest": sha(m)})  # fmt: skip
                elif "/blobs/" in self.path:
                    d = self.path.rsplit("/", 1)[1]
                    b = outer.image.blobs().get(d)
                    self.send(200, b) if b is not None else self.send(404, b"{}")
                else:
                    self.send(404, b"{}")

            do_HEAD = do_GET

        self.server = ThreadingHTTPServer((host, 0), H)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *a: None  # type: ignore[method-assign]  # dropped connections are the point
        self.host = f"{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    f = FakeRegistry()
    try:
        yield f
    finally:
        f.close()


@pytest.fixture(params=["download-then-unpack", "streamed"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ImageStore:
    """A fresh store; every test runs with both pull modes (DEVBOX_PULL_STREAM=0 and 1)."""
    monkeypatch.setenv("DEVBOX_AUTH_FILE", str(tmp_path / "auth.json"))
    monkeypatch.setenv("DEVBOX_PULL_STREAM", "1" if request.param == "streamed" else "0")
    return ImageStore(tmp_path / "root")


def assert_clean(store: ImageStore) -> None:
    assert store.list() == []
    left = [p.name for p in Path(store.tmp).iterdir()] if Path(store.tmp).exists() else []
    assert left == [], f"temp files left: {left}"


def test_fake_registry_pull_works(fake: FakeRegistry, store: ImageStore) -> None:
    img = pull.pull(store, f"{fake.host}/a/b:1")
    assert (Path(store.layer_dirs(img)[0]) / "hello").read_bytes() == b"fake\n"


def test_stalling_registry_times_out(store: ImageStore) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # accept and never answer
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    host = f"127.0.0.1:{srv.getsockname()[1]}"
    try:
        c = RegistryClient(host, timeouts=Timeouts(connect=2, read=1))
        t0 = time.monotonic()
        with pytest.raises(RegistryError, match=r"stopped answering \(no data for 1 s\)") as ei:
            pull.pull(store, f"{host}/a/b:1", client=c)
        assert time.monotonic() - t0 < 10
        assert "DEVBOX_REGISTRY_TIMEOUT" in (ei.value.hint or "")
        c.close()
    finally:
        stop.set()
        t.join()
        for s in conns:
            s.close()
        srv.close()
    assert_clean(store)


def test_stall_in_the_middle_of_a_blob(fake: FakeRegistry, store: ImageStore) -> None:
    layer = fake.image.layer

    def hook(h: BaseHTTPRequestHandler) -> bool:
        if h.path.endswith(sha(layer)):
            h.send_response(200)
            h.send_header("Content-Length", str(len(layer)))
            h.end_headers()
            h.wfile.write(layer[:1000])
            h.wfile.flush()
            time.sleep(4)
            return True
        return False

    fake.hook = hook
    c = RegistryClient(fake.host, timeouts=Timeouts(connect=2, read=1))
    with pytest.raises(RegistryError, match="stopped answering"):
        pull.pull(store, f"{fake.host}/a/b:1", client=c)
    c.close()
    assert_clean(store)
    assert not store.has_blob(sha(layer))


def test_dropped_connection_is_resumed_with_range(fake: FakeRegistry, store: ImageStore) -> None:
    layer = fake.image.layer
    ranges: list[str | None] = []

    def hook(h: BaseHTTPRequestHandler) -> bool:
        if not h.path.endswith(sha(layer)):
            return False
        rng = h.headers.get("Range")
        ranges.append(rng)
        if rng is None:  # first attempt: half the blob, then the connection drops
            h.send_response(200)
            h.send_header("Content-Length", str(len(layer)))
            h.end_headers()
            h.wfile.write(layer[: len(layer) // 2])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return True
        start = int(rng.split("=")[1].rstrip("-"))
        body = layer[start:]
        h.send_response(206)
        h.send_header("Content-Range", f"bytes {start}-{len(layer) - 1}/{len(layer)}")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
        return True

    fake.hook = hook
    img = pull.pull(store, f"{fake.host}/a/b:1")
    assert ranges == [None, f"bytes={len(layer) // 2}-"]
    assert (Path(store.layer_dirs(img)[0]) / "big.bin").stat().st_size == 256 * 4096


def test_connection_dropped_every_time_gives_up(fake: FakeRegistry, store: ImageStore) -> None:
    layer = fake.image.layer
    n = {"i": 0}

    def hook(h: BaseHTTPRequestHandler) -> bool:
        if not h.path.endswith(sha(layer)):
            return False
        n["i"] += 1
        h.send_response(200)
        h.send_header("Content-Length", str(len(layer)))
        h.end_headers()
        h.wfile.write(layer[:100])
        h.wfile.flush()
        h.close_connection = True
        h.connection.shutdown(socket.SHUT_RDWR)
        return True

    fake.hook = hook
    with pytest.raises(RegistryError, match="closed the connection|connection to .* failed"):
        pull.pull(store, f"{fake.host}/a/b:1")
    assert 4 <= n["i"] <= 6  # 4 attempts (+2 when the streamed attempt, unable to resume, starts over)
    assert_clean(store)


def test_redirect_to_other_host_drops_credentials(fake: FakeRegistry, store: ImageStore) -> None:
    other = FakeRegistry("127.0.0.2")
    other.image = fake.image
    try:
        fake.basic = ("u", "p")
        store_auth = Path(store.root).parent / "auth.json"
        from devbox.runtime.image import auth

        assert auth.auth_file() == store_auth
        auth.save_credentials(fake.host, "u", "p")

        def hook(h: BaseHTTPRequestHandler) -> bool:
            if "/blobs/" in h.path:
                h.send(307, b"", {"Location": f"http://{other.host}{h.path}"})  # type: ignore[attr-defined]
                return True
            return False

        fake.hook = hook
        img = pull.pull(store, f"{fake.host}/a/b:1")
        assert img.ref == f"{fake.host}/a/b:1"
        blob_reqs = [hd for m, p, hd in other.log if "/blobs/" in p]
        assert len(blob_reqs) == 2  # config and layer were fetched from the other host...
        assert all("authorization" not in hd for hd in blob_reqs)  # ...without the credentials
        assert all(
            hd.get("authorization") == basic_header("u", "p") for m, p, hd in fake.log if "/blobs/" in p
        )
    finally:
        other.close()


def test_wrong_layer_media_type(fake: FakeRegistry, store: ImageStore) -> None:
    fake.image.manifest_doc["layers"][0]["mediaType"] = "application/vnd.example.data"
    with pytest.raises(RegistryError, match="unsupported media type 'application/vnd.example.data'"):
        pull.pull(store, f"{fake.host}/a/b:1")
    assert_clean(store)


def test_wrong_manifest_media_type(fake: FakeRegistry, store: ImageStore) -> None:
    fake.image.manifest_doc["mediaType"] = "application/vnd.example.thing+json"
    with pytest.raises(RegistryError, match="unsupported media type"):
        pull.pull(store, f"{fake.host}/a/b:1")
    assert_clean(store)


def test_oversized_manifest(fake: FakeRegistry, store: ImageStore) -> None:
    fake.image.manifest_doc["annotations"] = {"pad": "x" * (5 << 20)}
    with pytest.raises(RegistryError, match="larger than 4 MiB"):
        pull.pull(store, f"{fake.host}/a/b:1")
    assert_clean(store)


def test_layer_digest_mismatch(fake: FakeRegistry, store: ImageStore) -> None:
    good = fake.image.layer
    bad = bytearray(good)
    bad[-20] ^= 1

    def hook(h: BaseHTTPRequestHandler) -> bool:
        if h.path.endswith(sha(good)):
            h.send(200, bytes(bad))  # type: ignore[attr-defined]
            return True
        return False

    fake.hook = hook
    with pytest.raises(RegistryError, match="digest mismatch"):
        pull.pull(store, f"{fake.host}/a/b:1")
    assert_clean(store)
    assert not store.has_blob(sha(good))


def test_429_then_ok_and_403(fake: FakeRegistry, store: ImageStore) -> None:
    n = {"429": 0}

    def hook(h: BaseHTTPRequestHandler) -> bool:
        if "/manifests/" in h.path and n["429"] == 0:
            n["429"] += 1
            h.send(429, b"{}", {"Retry-After": "1"})  # type: ignore[attr-defined]
            return True
        if "/forbidden/" in h.path:
            h.send(
                403, b'{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}'
            )  # type: ignore[attr-defined]
            return True
        return False

    fake.hook = hook
    t0 = time.monotonic()
    pull.pull(store, f"{fake.host}/a/b:1")
    assert time.monotonic() - t0 >= 1
    with pytest.raises(RegistryError, match=r"access denied \(403\) \(DENIED: requested access"):
        pull.pull(store, f"{fake.host}/forbidden/x:1")


def test_diff_id_mismatch_registers_nothing(fake: FakeRegistry, store: ImageStore) -> None:
    cfg = json.loads(fake.image.config)
    cfg["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    fake.image.config = json.dumps(cfg).encode()
    fake.image.manifest_doc["config"].update(digest=sha(fake.image.config), size=len(fake.image.config))
    with pytest.raises(Exception, match="DiffID mismatch"):
        pull.pull(store, f"{fake.host}/a/b:1")
    assert_clean(store)
    assert not any(Path(store.layers).iterdir())


def test_media_type_says_gzip_but_layer_is_plain_tar(fake: FakeRegistry, store: ImageStore) -> None:
    """The streamed unpack trusts the media type; when that fails on a verified blob, the store's own
    unpack (which sniffs the content) gets the last word."""
    import gzip as _gz

    plain = _gz.decompress(fake.image.layer)
    fake.image.layer = plain
    fake.image.manifest_doc["layers"][0].update(digest=sha(plain), size=len(plain))
    img = pull.pull(store, f"{fake.host}/a/b:1")
    assert (Path(store.layer_dirs(img)[0]) / "hello").read_bytes() == b"fake\n"
    assert [p.name for p in Path(store.tmp).iterdir()] == []
