"""Registry client protocol: auth challenges, token cache, redirects, manifests, platforms, credentials.

No network: httpx.MockTransport plays the registry (Docker Hub conventions included).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
from pathlib import Path

import httpx
import pytest

from devbox.errors import ConfigError, ImageNotFound, RegistryError
from devbox.runtime.image import auth, pull
from devbox.runtime.image.registry import (
    ACCEPT,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    RegistryClient,
    RegistryConnectionError,
    Timeouts,
    basic_header,
    endpoint_host,
    manifest_media_type,
    parse_challenge,  # fmt: skip
)


def sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(b"{}"), "size": 2},
                       "layers": []}).encode()  # fmt: skip


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVBOX_AUTH_FILE", str(tmp_path / "auth.json"))
    monkeypatch.setenv("DEVBOX_ROOT", str(tmp_path / "root"))
    monkeypatch.delenv("DEVBOX_INSECURE_REGISTRIES", raising=False)
    monkeypatch.delenv("DEVBOX_REGISTRY_TIMEOUT", raising=False)
    monkeypatch.delenv("DEVBOX_REGISTRY_CONNECT_TIMEOUT", raising=False)


class Hub:
    """A Docker-Hub-like registry with a separate token service, recording every request."""

    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.tokens_issued: list[list[str]] = []
        self.user, self.password = user, password

    def __call__(self, req: httpx.Request) -> httpx.Response:
        self.requests.append(req)
        if req.url.host == "auth.docker.io":
            if self.user:
                want = basic_header(self.user, self.password or "")
                if req.headers.get("authorization") != want:
                    return httpx.Response(401)
            scopes = req.url.params.get_list("scope")
            self.tokens_issued.append(scopes)
            return httpx.Response(200, json={"token": "tok-" + "+".join(scopes)})
        assert req.url.host == "registry-1.docker.io"
        path = req.url.path
        scope = ""
        if path.startswith("/v2/") and path != "/v2/":
            repo = path[4:].rsplit("/", 2)[0]
            scope = f"repository:{repo}:pull"
        authz = req.headers.get("authorization", "")
        if not authz.startswith("Bearer tok-") or (scope and scope not in authz):
            ch = 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io"'
            if scope:
                ch += f',scope="{scope}"'
            return httpx.Response(401, headers={"WWW-Authenticate": ch})
        if "/manifests/" in path:
            return httpx.Response(200, content=MANIFEST,
                                  headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha(MANIFEST)})  # fmt: skip
        return httpx.Response(200, content=b"ok")


def client(handler: object, registry: str = "docker.io", **kw: object) -> RegistryClient:
    return RegistryClient(registry, transport=httpx.MockTransport(handler), **kw)  # type: ignore[arg-type]


# --- challenges and tokens ------------------------------------------------------------------------


def test_parse_challenge() -> None:
    s, p = parse_challenge(
        'Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull,push"'
    )
    assert s == "bearer"
    assert p == {
        "realm": "https://auth.example/token",
        "service": "reg.example",
        "scope": "repository:a/b:pull,push",
    }
    assert parse_challenge('Basic realm="x y"') == ("basic", {"realm": "x y"})


def test_docker_hub_short_name_bearer_flow_and_token_cache() -> None:
    hub = Hub()
    c = client(hub)
    m = c.get_manifest("library/python", "3.12")
    assert m.media_type == OCI_MANIFEST and m.digest == sha(MANIFEST)
    first = hub.requests[0]
    assert str(first.url) == "https://registry-1.docker.io/v2/library/python/manifests/3.12"
    assert first.headers["accept"] == ACCEPT
    assert hub.tokens_issued == [["repository:library/python:pull"]]
    token_req = next(r for r in hub.requests if r.url.host == "auth.docker.io")
    assert token_req.url.params["service"] == "registry.docker.io"
    assert "authorization" not in token_req.headers  # anonymous
    # the token is cached per scope: a second request needs no new token, a new repository does
    c.get_manifest("library/python", "3.11")
    assert len(hub.tokens_issued) == 1
    c.get_manifest("library/debian", "12")
    assert hub.tokens_issued[-1] == ["repository:library/debian:pull"]
    assert len(hub.tokens_issued) == 2


def test_pull_short_name_goes_to_registry_1(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = Hub()
    d = pull.resolve_digest("python:3.12", client=client(hub))
    assert d == sha(MANIFEST)
    assert hub.requests[-1].method == "HEAD"
    assert hub.requests[-1].url.path == "/v2/library/python/manifests/3.12"
    assert endpoint_host("docker.io") == "registry-1.docker.io"


def test_token_request_uses_stored_credentials() -> None:
    auth.save_credentials("docker.io", "alice", "pw")
    hub = Hub("alice", "pw")
    c = client(hub)
    c.get_manifest("alice/app", "1")
    token_req = next(r for r in hub.requests if r.url.host == "auth.docker.io")
    assert token_req.headers["authorization"] == basic_header("alice", "pw")
    assert token_req.url.params["account"] == "alice"


def test_token_service_refusal_is_a_clear_error() -> None:
    hub = Hub("alice", "right")
    c = client(hub, credentials=("alice", "wrong"))
    with pytest.raises(RegistryError, match="refused the credentials") as ei:
        c.get_manifest("alice/app", "1")
    assert "devbox login docker.io" in (ei.value.hint or "")


def test_basic_auth_retry_once_then_401() -> None:
    seen: list[str | None] = []

    def h(req: httpx.Request) -> httpx.Response:
        seen.append(req.headers.get("authorization"))
        if req.headers.get("authorization") == basic_header("u", "p"):
            return httpx.Response(200, content=b"{}")
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    c = client(h, "reg.example", credentials=("u", "p"))
    c.ping()
    assert seen == [None, basic_header("u", "p")]
    c.ping()  # now sent pre-emptively
    assert seen[-1] == basic_header("u", "p") and len(seen) == 3
    bad = client(h, "reg.example", credentials=("u", "bad"))
    with pytest.raises(RegistryError, match=r"authentication required \(401\)") as ei:
        bad.ping()
    assert "refused" in (ei.value.hint or "")
    anon = client(h, "reg.example", credentials=None)
    with pytest.raises(RegistryError, match="401") as ei:
        anon.ping()
    assert "devbox login reg.example" in (ei.value.hint or "")


def test_check_login_bad_credentials() -> None:
    def h(req: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    with pytest.raises(RegistryError, match="refused the credentials"):
        client(h, "reg.example", credentials=("u", "p")).check_login()


# --- redirects, throttling, errors ----------------------------------------------------------------


def test_redirect_to_other_host_drops_authorization() -> None:
    blob = b"layer-bytes"
    seen: dict[str, str | None] = {}

    def h(req: httpx.Request) -> httpx.Response:
        seen[req.url.host] = req.headers.get("authorization")
        if req.url.host == "reg.example":
            if req.headers.get("authorization") != basic_header("u", "p"):
                return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
            return httpx.Response(307, headers={"Location": "https://cdn.example/blob?sig=1"})
        return httpx.Response(200, content=blob)

    c = client(h, "reg.example", credentials=("u", "p"))
    assert c.get_blob_bytes("a/b", sha(blob)) == blob
    assert seen["reg.example"] == basic_header("u", "p")
    assert seen["cdn.example"] is None


def test_redirect_https_to_http_refused() -> None:
    def h(req: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "http://cdn.example/x"})

    with pytest.raises(RegistryError, match="HTTPS to plain HTTP"):
        client(h, "reg.example", credentials=None).get_blob_bytes("a/b", sha(b"x"))


def test_too_many_redirects() -> None:
    def h(req: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "/again"})

    with pytest.raises(RegistryError, match="too many redirects"):
        client(h, "reg.example", credentials=None).ping()


def test_429_retry_after_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("devbox.runtime.image.registry.time.sleep", sleeps.append)
    n = {"i": 0}

    def h(req: httpx.Request) -> httpx.Response:
        n["i"] += 1
        if n["i"] == 1:
            return httpx.Response(429, headers={"Retry-After": "2"})
        return httpx.Response(200)

    client(h, "reg.example", credentials=None).ping()
    assert sleeps == [2.0]

    def always(req: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "3600"})

    with pytest.raises(RegistryError, match=r"too many requests \(429\)"):
        client(always, "reg.example", credentials=None).ping()


@pytest.mark.parametrize("code,text", [(403, "access denied"), (404, "not found"), (500, "HTTP 500")])
def test_status_errors(code: int, text: str) -> None:
    def h(req: httpx.Request) -> httpx.Response:
        return httpx.Response(code, json={"errors": [{"code": "X", "message": "y"}]})

    with pytest.raises(RegistryError, match=text) as ei:
        client(h, "reg.example", credentials=None).get_manifest("a/b", "t")
    assert "\n" not in ei.value.message and ei.value.hint


def test_connect_error_is_a_connection_error() -> None:
    def h(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=req)

    with pytest.raises(RegistryConnectionError, match="cannot connect to reg.example"):
        client(h, "reg.example", credentials=None).ping()


def test_timeouts_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVBOX_REGISTRY_TIMEOUT", "5")
    monkeypatch.setenv("DEVBOX_REGISTRY_CONNECT_TIMEOUT", "2.5")
    assert Timeouts.from_env() == Timeouts(2.5, 5.0)
    monkeypatch.setenv("DEVBOX_REGISTRY_TIMEOUT", "soon")
    with pytest.raises(RegistryError, match="not a number"):
        Timeouts.from_env()


# --- manifests ------------------------------------------------------------------------------------


def test_manifest_digest_mismatch_by_digest_and_header() -> None:
    def h(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=MANIFEST, headers={"Content-Type": OCI_MANIFEST})

    c = client(h, "reg.example", credentials=None)
    with pytest.raises(RegistryError, match="digest mismatch"):
        c.get_manifest("a/b", "sha256:" + "0" * 64)

    def h2(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=MANIFEST,
                              headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": "sha256:" + "1" * 64})  # fmt: skip

    with pytest.raises(RegistryError, match="digest mismatch"):
        client(h2, "reg.example", credentials=None).get_manifest("a/b", "t")


def test_oversized_manifest_refused() -> None:
    big = b'{"x":"' + b"a" * (MAX_MANIFEST_BYTES + 10) + b'"}'

    def declared(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=big, headers={"Content-Type": OCI_MANIFEST})

    with pytest.raises(RegistryError, match="larger than 4 MiB"):
        client(declared, "reg.example", credentials=None).get_manifest("a/b", "t")

    def chunked(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=iter([big[i : i + 65536] for i in range(0, len(big), 65536)]),
                              headers={"Content-Type": OCI_MANIFEST})  # fmt: skip

    with pytest.raises(RegistryError, match="larger than 4 MiB"):
        client(chunked, "reg.example", credentials=None).get_manifest("a/b", "t")


@pytest.mark.parametrize("ct,body,expected", [
    (OCI_MANIFEST, {"mediaType": OCI_MANIFEST, "config": {}, "layers": []}, OCI_MANIFEST),
    (DOCKER_MANIFEST, {"mediaType": DOCKER_MANIFEST, "config": {}, "layers": []}, DOCKER_MANIFEST),
    (OCI_INDEX, {"manifests": []}, OCI_INDEX),
    (DOCKER_MANIFEST_LIST, {"mediaType": DOCKER_MANIFEST_LIST, "manifests": []}, DOCKER_MANIFEST_LIST),
    ("application/json", {"config": {}, "layers": []}, OCI_MANIFEST),
    ("", {"mediaType": OCI_INDEX, "manifests": []}, OCI_INDEX),
])  # fmt: skip
def test_manifest_media_types(ct: str, body: dict[str, object], expected: str) -> None:
    assert manifest_media_type(json.dumps(body).encode(), ct, "m") == expected


@pytest.mark.parametrize("ct,body,text", [
    ("application/vnd.docker.distribution.manifest.v1+prettyjws", {"schemaVersion": 1}, "schema 1"),
    ("application/vnd.example.helm+json", {"x": 1}, "unsupported media type"),
    (OCI_MANIFEST, {"mediaType": OCI_INDEX}, "media type mismatch"),
    (OCI_MANIFEST, None, "not JSON"),
])  # fmt: skip
def test_manifest_media_type_errors(ct: str, body: object, text: str) -> None:
    raw = b"<html>" if body is None else json.dumps(body).encode()
    with pytest.raises(RegistryError, match=text):
        manifest_media_type(raw, ct, "m")


def test_wrong_layer_and_config_media_types() -> None:
    m = {"config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(b"c"), "size": 1},
         "layers": [{"mediaType": "application/vnd.example.blob", "digest": sha(b"l"), "size": 1}]}  # fmt: skip
    with pytest.raises(RegistryError, match="unsupported media type"):
        pull._check_manifest(m, "x")
    m["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json"  # type: ignore[index]
    with pytest.raises(RegistryError, match="not an image config"):
        pull._check_manifest(m, "x")


# --- platforms ------------------------------------------------------------------------------------


def _index(*plats: tuple[str, str, str | None]) -> dict[str, object]:
    out = []
    for i, (o, a, v) in enumerate(plats):
        p = {"os": o, "architecture": a}
        if v:
            p["variant"] = v
        out.append({"mediaType": OCI_MANIFEST, "digest": "sha256:" + str(i) * 64, "size": 1, "platform": p})
    out.append({"mediaType": OCI_MANIFEST, "digest": "sha256:" + "f" * 64, "size": 1,
                "platform": {"os": "unknown", "architecture": "unknown"},
                "annotations": {"vnd.docker.reference.type": "attestation-manifest"}})  # fmt: skip
    return {"manifests": out}


def test_select_manifest() -> None:
    idx = _index(
        ("linux", "arm", "v7"),
        ("linux", "amd64", None),
        ("linux", "arm64", "v8"),
        ("windows", "amd64", None),
    )
    assert pull.select_manifest(idx, ("linux", "amd64", None), "x")["digest"] == "sha256:" + "1" * 64
    assert pull.select_manifest(idx, ("linux", "arm64", "v8"), "x")["digest"] == "sha256:" + "2" * 64
    assert pull.select_manifest(idx, ("linux", "arm", "v7"), "x")["digest"] == "sha256:" + "0" * 64
    # arm64 without variant in the index still matches a v8 host
    assert (
        pull.select_manifest(_index(("linux", "arm64", None)), ("linux", "arm64", "v8"), "x")["digest"]
        == "sha256:" + "0" * 64
    )
    with pytest.raises(ImageNotFound, match="no image for platform linux/s390x") as ei:
        pull.select_manifest(idx, ("linux", "s390x", None), "x")
    assert "linux/amd64" in (ei.value.hint or "") and "unknown" not in (ei.value.hint or "")
    with pytest.raises(ImageNotFound):
        pull.select_manifest(idx, ("linux", "arm", "v6"), "x")


def test_host_platform_and_parse() -> None:
    o, a, _ = pull.host_platform()
    assert o == "linux" and a in ("amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64")
    assert pull.parse_platform("linux/arm64/v8") == ("linux", "arm64", "v8")
    with pytest.raises(ConfigError):
        pull.parse_platform("arm64")


# --- credentials ----------------------------------------------------------------------------------


def test_credentials_round_trip_docker_format(tmp_path: Path) -> None:
    p = auth.save_credentials("reg.example:5000", "bob", "p:w")
    assert p == tmp_path / "auth.json"
    assert oct(p.stat().st_mode & 0o777) == "0o600"
    data = json.loads(p.read_text())
    assert data == {"auths": {"reg.example:5000": {"auth": base64.b64encode(b"bob:p:w").decode()}}}
    assert auth.get_credentials("reg.example:5000") == ("bob", "p:w")
    auth.save_credentials("docker.io", "alice", "x")
    assert "https://index.docker.io/v1/" in json.loads(p.read_text())["auths"]
    assert auth.get_credentials("docker.io") == ("alice", "x")
    assert auth.remove_credentials("reg.example:5000") is True
    assert auth.remove_credentials("reg.example:5000") is False
    assert auth.get_credentials("reg.example:5000") is None
    assert auth.get_credentials("docker.io") == ("alice", "x")


def test_credentials_read_docker_written_keys(tmp_path: Path) -> None:
    (tmp_path / "auth.json").write_text(json.dumps({"auths": {
        "https://reg.example/v1/": {"auth": base64.b64encode(b"a:b").decode()},
        "index.docker.io": {"username": "u", "password": "p"},
    }, "credsStore": ""}))  # fmt: skip
    assert auth.get_credentials("reg.example") == ("a", "b")
    assert auth.get_credentials("docker.io") == ("u", "p")
    assert auth.get_credentials("other.example") is None


def test_malformed_credentials_file(tmp_path: Path) -> None:
    (tmp_path / "auth.json").write_text("{nope")
    with pytest.raises(ConfigError, match="unreadable"):
        auth.get_credentials("reg.example")


def test_auth_file_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DEVBOX_AUTH_FILE")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    assert auth.auth_file() == tmp_path / "dc" / "config.json"
    monkeypatch.delenv("DOCKER_CONFIG")
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert auth.auth_file() == Path.home() / ".docker" / "config.json"
    if os.geteuid() == 0:
        other = next((u for u in pwd.getpwall() if u.pw_uid not in (0,) and u.pw_dir not in ("", "/")), None)
        if other is not None:
            monkeypatch.setenv("SUDO_USER", other.pw_name)
            assert auth.auth_file() == Path(other.pw_dir) / ".docker" / "config.json"


def test_insecure_registries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for r in ("localhost:5000", "127.0.0.1:5000", "127.0.0.2", "[::1]:5000", "localhost"):
        assert auth.is_insecure(r), r
    assert not auth.is_insecure("reg.example:5000")
    monkeypatch.setenv("DEVBOX_INSECURE_REGISTRIES", "reg.example:5000, lan.example")
    assert auth.is_insecure("reg.example:5000") and auth.is_insecure("lan.example:8080")
    assert not auth.is_insecure("reg.example:6000")
    monkeypatch.delenv("DEVBOX_INSECURE_REGISTRIES")
    root = tmp_path / "root"
    root.mkdir()
    (root / "registries.json").write_text('{"insecure": ["box.lan:5000"]}')
    assert auth.is_insecure("box.lan:5000")
    assert (
        client(lambda r: httpx.Response(200), "box.lan:5000", credentials=None).base == "http://box.lan:5000"
    )
    assert (
        client(lambda r: httpx.Response(200), "reg.example", credentials=None).base == "https://reg.example"
    )
    (root / "registries.json").write_text('{"insecure": "box.lan"}')
    with pytest.raises(ConfigError, match="must be a list"):
        auth.is_insecure("x.example")
