"""A client for the OCI distribution API (registry v2) on httpx.

- Auth: anonymous, basic, and docker's bearer tokens: a 401 with `WWW-Authenticate: Bearer realm=..,
  service=..,scope=..` is answered by fetching a token from the realm (with the stored credentials, if
  any) and retrying once; tokens are cached per scope for this client's life.
- Transport: HTTPS, plain HTTP only for loopback registries and those marked insecure (auth.py).
  Timeouts: connect 10 s, read 60 s (DEVBOX_REGISTRY_CONNECT_TIMEOUT / DEVBOX_REGISTRY_TIMEOUT).
  Redirects are followed by hand (at most 5): when one leads to another host (blob storage, a CDN), the
  Authorization header is dropped. 429/503 answers with a short Retry-After (<= 10 s) are retried twice.
- Manifests are capped at 4 MiB and checked against their digest; blobs are streamed to a file while
  their sha256 is computed, resumed with a Range request when the connection drops.

Every failure is a one-line RegistryError naming the registry/repository and a hint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from devbox.errors import RegistryError
from devbox.log import log
from devbox.runtime.image import auth

ENV_TIMEOUT = "DEVBOX_REGISTRY_TIMEOUT"
ENV_CONNECT_TIMEOUT = "DEVBOX_REGISTRY_CONNECT_TIMEOUT"
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
ACCEPT = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
MAX_MANIFEST_BYTES = 4 << 20
MAX_REDIRECTS = 5
MAX_RETRY_AFTER = 10.0
BLOB_ATTEMPTS = 4
HUB_ENDPOINT = "registry-1.docker.io"
USER_AGENT = "devbox/0.1"
_CHUNK = 1 << 20
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        v = float(raw)
    except ValueError:
        raise RegistryError(
            f"{name}={raw!r} is not a number of seconds", hint=f"unset it or set e.g. {name}=60"
        ) from None
    if v <= 0:
        raise RegistryError(f"{name} must be positive", hint=f"unset it or set e.g. {name}=60")
    return v


@dataclass(frozen=True)
class Timeouts:
    connect: float = DEFAULT_CONNECT_TIMEOUT
    read: float = DEFAULT_READ_TIMEOUT

    @classmethod
    def from_env(cls) -> Timeouts:
        return cls(
            _env_float(ENV_CONNECT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT),
            _env_float(ENV_TIMEOUT, DEFAULT_READ_TIMEOUT),
        )


@dataclass(frozen=True)
class Manifest:
    raw: bytes
    media_type: str
    digest: str  # sha256 of raw

    def json(self) -> dict[str, Any]:
        return json.loads(self.raw)  # type: ignore[no-any-return]


def endpoint_host(registry: str) -> str:
    """The host to talk to: Docker Hub's API lives on registry-1.docker.io."""
    return HUB_ENDPOINT if registry in ("docker.io", "index.docker.io") else registry


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="x",service="y"` -> ("bearer", {"realm": "x", "service": "y"})."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for m in re.finditer(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))', rest):
        val = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", val)
    return scheme.lower(), params


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Aborted(Exception):
    """A parallel transfer was stopped because another one failed."""


class RegistryConnectionError(RegistryError):
    """The connection failed or stalled (as opposed to an answer the registry gave)."""

    timeout = False


class ResumeUnsupported(RegistryError):
    """A streamed download broke and the registry cannot resume it (it ignores Range)."""


def basic_header(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class RegistryClient:
    """One registry (e.g. `docker.io`, `127.0.0.1:5000`). Thread-safe: pulls share it across threads."""

    def __init__(self, registry: str, *, credentials: tuple[str, str] | None | bool = True,
                 insecure: bool | None = None, timeouts: Timeouts | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:  # fmt: skip
        self.registry = registry
        self.host = endpoint_host(registry)
        plain = auth.is_insecure(registry) if insecure is None else insecure
        self.base = f"{'http' if plain else 'https'}://{self.host}"
        if credentials is True:
            self.credentials: tuple[str, str] | None = auth.get_credentials(registry)
        elif credentials is False:
            self.credentials = None
        else:
            self.credentials = credentials
        self.timeouts = timeouts or Timeouts.from_env()
        t = httpx.Timeout(self.timeouts.read, connect=self.timeouts.connect, pool=self.timeouts.connect)
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=8)
        self.http = httpx.Client(timeout=t, follow_redirects=False, transport=transport, limits=limits,
                                 headers={"User-Agent": USER_AGENT})  # fmt: skip
        self._tokens: dict[str, str] = {}  # scope -> "Bearer x" / "Basic x"
        self._scheme: str | None = None  # "bearer" / "basic" once a challenge was seen
        self._challenge: dict[str, str] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- errors -----------------------------------------------------------------------------------

    def _where(self, repo: str | None) -> str:
        return f"{self.registry}/{repo}" if repo else self.registry

    def _transport_error(self, e: httpx.HTTPError, repo: str | None, what: str) -> RegistryConnectionError:
        err = self._transport_error_(e, repo, what)
        err.timeout = isinstance(e, httpx.TimeoutException)
        return err

    def _transport_error_(self, e: httpx.HTTPError, repo: str | None, what: str) -> RegistryConnectionError:
        where = self._where(repo)
        if isinstance(e, httpx.ConnectTimeout):
            return RegistryConnectionError(f"{what}: cannot connect to {self.registry} within {self.timeouts.connect:g} s",
                                 hint=f"check the address and the network; raise {ENV_CONNECT_TIMEOUT} for slow links")  # fmt: skip
        if isinstance(e, httpx.TimeoutException):
            return RegistryConnectionError(f"{what}: {where} stopped answering (no data for {self.timeouts.read:g} s)",
                                 hint=f"the registry stalls; retry later, or raise {ENV_TIMEOUT}")  # fmt: skip
        if isinstance(e, httpx.ConnectError):
            msg = str(e) or type(e).__name__
            hint = "check the registry address and that it is running"
            if "SSL" in msg or "CERTIFICATE" in msg.upper() or "wrong version number" in msg:
                hint = (
                    f"TLS failed; if {self.registry} only speaks plain HTTP, list it in "
                    f"{auth.ENV_INSECURE} or {auth.REGISTRIES_FILE} under the state root"
                )
            return RegistryConnectionError(f"{what}: cannot connect to {self.registry}: {msg}", hint=hint)
        return RegistryConnectionError(f"{what}: connection to {where} failed: {e or type(e).__name__}",
                             hint="the registry dropped the connection; retry")  # fmt: skip

    def _status_error(self, r: httpx.Response, repo: str | None, what: str) -> RegistryError:
        where = self._where(repo)
        code = r.status_code
        detail = ""
        try:
            body = r.json()
            errs = body.get("errors") if isinstance(body, dict) else None
            if errs and isinstance(errs, list) and isinstance(errs[0], dict):
                detail = f" ({errs[0].get('code', '')}: {errs[0].get('message', '')})".replace(": )", ")")
        except Exception:
            pass
        if code == 401:
            hint = (f"the stored credentials were refused; run `devbox login {self.registry}` again"
                    if self.credentials else f"log in first: `devbox login {self.registry}`")  # fmt: skip
            return RegistryError(f"{what}: {where}: authentication required (401){detail}", hint=hint)
        if code == 403:
            return RegistryError(f"{what}: {where}: access denied (403){detail}",
                                 hint="the account has no access to this repository (or the action)")  # fmt: skip
        if code == 404:
            return RegistryError(f"{what}: {where}: not found (404){detail}",
                                 hint="check the name and tag; private repositories also answer 404 without a login")  # fmt: skip
        if code == 429:
            return RegistryError(f"{what}: {where}: too many requests (429){detail}",
                                 hint="the registry rate-limits this client; wait and retry, or log in")  # fmt: skip
        if code == 416:
            return RegistryError(f"{what}: {where}: range not satisfiable (416)", hint="retry the operation")
        return RegistryError(f"{what}: {where}: HTTP {code}{detail}",
                             hint="the registry failed or does not speak the OCI distribution API")  # fmt: skip

    # --- requests: auth, redirects, retries -------------------------------------------------------

    def url(self, path: str) -> str:
        return self.base + path

    def _auth_header(self, scope: str, repo: str | None) -> str | None:
        with self._lock:
            if scope in self._tokens:
                return self._tokens[scope]
            if self._scheme == "basic" and self.credentials:
                return basic_header(*self.credentials)
            challenge = dict(self._challenge) if self._scheme == "bearer" and scope else None
        if challenge:  # a new scope on a token registry: get its token before asking
            tok = self._fetch_token(challenge, scope, repo)
            with self._lock:
                self._tokens[scope] = tok
            return tok
        return None

    def _fetch_token(self, challenge: dict[str, str], scope: str, repo: str | None) -> str:
        realm = challenge.get("realm")
        if not realm:
            raise RegistryError(f"{self.registry} sent a Bearer challenge without a realm",
                                hint="the registry is misconfigured")  # fmt: skip
        rp = urllib.parse.urlsplit(realm)
        if rp.scheme not in ("https", "http") or (rp.scheme == "http" and not self.base.startswith("http:")):
            raise RegistryError(f"{self.registry}: refusing token realm {realm!r}",
                                hint="a token realm must be https (http only for an insecure registry)")  # fmt: skip
        params: list[tuple[str, str | int | float | bool | None]] = []
        if challenge.get("service"):
            params.append(("service", challenge["service"]))
        for s in scope.split(" "):
            if s:
                params.append(("scope", s))
        if self.credentials:
            params.append(("account", self.credentials[0]))
        basic = httpx.BasicAuth(*self.credentials) if self.credentials else None
        try:
            r = self.http.get(realm, params=params, auth=basic, follow_redirects=True)
        except httpx.HTTPError as e:
            raise self._transport_error(e, repo, "token request") from None
        if r.status_code in (401, 403):
            raise RegistryError(f"{self.registry}: the token service refused the credentials ({r.status_code})",
                                hint=f"run `devbox login {self.registry}` with valid credentials" if self.credentials
                                else f"log in first: `devbox login {self.registry}`")  # fmt: skip
        if r.status_code != 200:
            raise self._status_error(r, repo, "token request")
        try:
            body = r.json()
            token = body.get("token") or body.get("access_token")
        except ValueError:
            token = None
        if not token or not isinstance(token, str):
            raise RegistryError(f"{self.registry}: the token service answered without a token",
                                hint="the registry's auth service is misconfigured")  # fmt: skip
        return f"Bearer {token}"

    def _handle_401(self, r: httpx.Response, scope: str, repo: str | None) -> bool:
        """Learn from a 401's challenge; True when a retry with new auth makes sense."""
        hdr = r.headers.get("www-authenticate", "")
        scheme, params = parse_challenge(hdr) if hdr else ("", {})
        if scheme == "bearer":
            want = scope
            if params.get("scope") and params["scope"] not in scope.split(" "):
                want = f"{scope} {params['scope']}".strip()
            tok = self._fetch_token(params, want, repo)
            with self._lock:
                self._scheme, self._challenge = "bearer", params
                self._tokens[scope] = tok
            return True
        if scheme == "basic":
            with self._lock:
                self._scheme = "basic"
            sent = r.request.headers.get("authorization", "").lower().startswith("basic ")
            return bool(self.credentials) and not sent
        return False

    def request(self, method: str, path_or_url: str, *, scope: str = "", repo: str | None = None, what: str = "",
                headers: dict[str, str] | None = None, content: bytes | Callable[[], Any] | None = None,
                stream: bool = False, ok: tuple[int, ...] = (200,)) -> httpx.Response:  # fmt: skip
        """Send a request with auth, manual redirects and brief 429/503 retries; raise on non-`ok` status.

        `content` may be a callable returning a fresh body (bytes or an iterator) for each attempt.
        With `stream`, the caller must close the response.
        """
        what = what or f"{method} {path_or_url}"
        url = path_or_url if "://" in path_or_url else self.url(path_or_url)
        auth_retried = False
        throttled = 0
        while True:
            r = self._send_following(method, url, scope, repo, what, headers, content, stream)
            if stream and r.status_code not in ok:
                try:
                    r.read()  # an error body: small
                except httpx.HTTPError:
                    pass
                finally:
                    r.close()
            if r.status_code == 401 and not auth_retried:
                auth_retried = True
                if self._handle_401(r, scope, repo):
                    continue
            if r.status_code in (429, 503) and throttled < 2:
                delay = _retry_after(r.headers.get("retry-after"))
                if delay is not None and delay <= MAX_RETRY_AFTER:
                    throttled += 1
                    log.info(
                        "%s: %s answered %d; retrying in %.0f s", what, self.registry, r.status_code, delay
                    )
                    time.sleep(delay)
                    continue
            if r.status_code not in ok:
                raise self._status_error(r, repo, what)
            return r

    def _send_following(self, method: str, url: str, scope: str, repo: str | None, what: str,
                        headers: dict[str, str] | None, content: Any, stream: bool) -> httpx.Response:  # fmt: skip
        origin = urllib.parse.urlsplit(url).netloc
        same_origin = True
        for _ in range(MAX_REDIRECTS + 1):
            h = dict(headers or {})
            if same_origin and (a := self._auth_header(scope, repo)):
                h["Authorization"] = a
            body = content() if callable(content) else content
            try:
                req = self.http.build_request(method, url, headers=h, content=body)
                r = self.http.send(req, stream=stream)
            except httpx.HTTPError as e:
                raise self._transport_error(e, repo, what) from None
            if r.status_code not in (301, 302, 303, 307, 308) or "location" not in r.headers:
                return r
            if stream:
                r.close()
            nxt = urllib.parse.urljoin(url, r.headers["location"])
            np = urllib.parse.urlsplit(nxt)
            if np.scheme not in ("http", "https"):
                raise RegistryError(f"{what}: {self.registry} redirected to a non-HTTP URL",
                                    hint="the registry is misconfigured")  # fmt: skip
            if urllib.parse.urlsplit(url).scheme == "https" and np.scheme == "http":
                raise RegistryError(f"{what}: {self.registry} redirected from HTTPS to plain HTTP ({np.netloc})",
                                    hint="refused: the download would not be protected")  # fmt: skip
            if np.netloc != origin:
                same_origin = False  # credentials never follow a redirect to another host
            if r.status_code == 303:
                method, content = "GET", None
            url = nxt
        raise RegistryError(
            f"{what}: {self.registry}: too many redirects", hint="the registry is misconfigured"
        )

    # --- API ----------------------------------------------------------------------------------------

    def ping(self) -> None:
        """GET /v2/ (with auth): raises RegistryError when the registry refuses the credentials."""
        r = self.request("GET", "/v2/", what="login")
        r.close()

    def check_login(self) -> None:
        """Verify the credentials: /v2/ and, for token registries, a token for the registry itself."""
        r = self.request("GET", "/v2/", what="login", ok=(200, 401))
        if r.status_code == 401:
            if not self.credentials:
                raise self._status_error(r, None, "login")
            raise RegistryError(f"login: {self.registry} refused the credentials (401)",
                                hint="check the user name and password")  # fmt: skip

    @staticmethod
    def pull_scope(repo: str) -> str:
        return f"repository:{repo}:pull"

    @staticmethod
    def push_scope(repo: str, mount_from: str | None = None) -> str:
        s = f"repository:{repo}:pull,push"
        return s + (f" repository:{mount_from}:pull" if mount_from else "")

    def get_manifest(self, repo: str, ref: str, expected_digest: str | None = None) -> Manifest:
        """Fetch a manifest or index by tag or digest; checks size, media type and digest."""
        what = f"manifest {repo}:{ref}" if not ref.startswith("sha256:") else f"manifest {repo}@{ref}"
        r = self.request("GET", f"/v2/{repo}/manifests/{ref}", scope=self.pull_scope(repo), repo=repo,
                         what=f"pull {what}", headers={"Accept": ACCEPT}, stream=True)  # fmt: skip
        try:
            declared = int(r.headers.get("content-length") or 0)
            if declared > MAX_MANIFEST_BYTES:
                raise _oversized(self._where(repo), declared)
            buf = bytearray()
            try:
                for b in r.iter_bytes():
                    buf += b
                    if len(buf) > MAX_MANIFEST_BYTES:
                        raise _oversized(self._where(repo), len(buf))
            except httpx.HTTPError as e:
                raise self._transport_error(e, repo, f"pull {what}") from None
        finally:
            r.close()
        raw = bytes(buf)
        digest = sha256_bytes(raw)
        want = expected_digest or (ref if ref.startswith("sha256:") else None)
        if want and want != digest:
            raise RegistryError(f"{what}: digest mismatch (expected {want}, got {digest})",
                                hint="the registry or a proxy altered the manifest; nothing was stored")  # fmt: skip
        header_digest = r.headers.get("docker-content-digest", "")
        if header_digest.startswith("sha256:") and header_digest != digest:
            raise RegistryError(f"{what}: digest mismatch (registry says {header_digest}, content is {digest})",
                                hint="the manifest was altered in transit; nothing was stored")  # fmt: skip
        media = manifest_media_type(raw, r.headers.get("content-type", ""), what)
        return Manifest(raw, media, digest)

    def manifest_digest(self, repo: str, ref: str) -> str:
        """The digest a tag points to, by HEAD (no body); falls back to GET when no header is sent."""
        r = self.request("HEAD", f"/v2/{repo}/manifests/{ref}", scope=self.pull_scope(repo), repo=repo,
                         what=f"resolve {repo}:{ref}", headers={"Accept": ACCEPT})  # fmt: skip
        d = str(r.headers.get("docker-content-digest", ""))
        if _DIGEST_RE.match(d):
            return d
        return self.get_manifest(repo, ref).digest

    def blob_exists(self, repo: str, digest: str, scope: str | None = None) -> bool:
        r = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=scope or self.push_scope(repo), repo=repo,
                         what=f"check blob {digest[:19]}", ok=(200, 404))  # fmt: skip
        return r.status_code == 200

    def get_blob_bytes(self, repo: str, digest: str, limit: int = MAX_MANIFEST_BYTES * 4) -> bytes:
        """A small blob (an image config) in memory, verified."""
        what = f"blob {digest[:19]}"
        r = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=self.pull_scope(repo), repo=repo,
                         what=f"pull {what}", stream=True)  # fmt: skip
        buf = bytearray()
        try:
            for b in r.iter_bytes():
                buf += b
                if len(buf) > limit:
                    raise RegistryError(f"{self._where(repo)}: {what} is larger than {limit} bytes",
                                        hint="an image config this big is not genuine")  # fmt: skip
        except httpx.HTTPError as e:
            raise self._transport_error(e, repo, f"pull {what}") from None
        finally:
            r.close()
        got = sha256_bytes(bytes(buf))
        if got != digest:
            raise RegistryError(f"{self._where(repo)}: {what}: digest mismatch (got {got})",
                                hint="the registry or a proxy altered the blob; nothing was stored")  # fmt: skip
        return bytes(buf)

    def download_blob(self, repo: str, digest: str, dest: Path, size: int | None = None,
                      progress: Callable[[int], None] | None = None,
                      abort: threading.Event | None = None,
                      sink: Callable[[bytes], None] | None = None) -> None:  # fmt: skip
        """Stream a blob into `dest` (created/truncated), verifying size and sha256 as it is written.

        A dropped connection is retried (BLOB_ATTEMPTS in all), resuming with a Range request when the
        registry honours it; a stall is retried only when the attempt had made progress. On any failure
        `dest` is removed. `sink`, if given, also gets every chunk in order (a streaming unpacker); the
        digest is only known to be right when this returns.
        """
        what = f"blob {digest[:19]}"
        st = _DownloadState()
        attempt = 0
        try:
            with open(dest, "wb") as f:
                while True:
                    attempt += 1
                    before = st.done
                    try:
                        self._download_once(repo, digest, f, st, size, progress, abort, what, sink)
                        break
                    except RegistryConnectionError as e:
                        if attempt >= BLOB_ATTEMPTS or (e.timeout and st.done == before):
                            raise
                        log.info("%s; retrying (%d/%d)", e.message, attempt, BLOB_ATTEMPTS - 1)
                        time.sleep(min(0.2 * 2**attempt, 2.0))
            got = "sha256:" + st.h.hexdigest()
            if size is not None and st.done != size:
                raise RegistryError(f"{self._where(repo)}: {what}: size mismatch (expected {size}, got {st.done})",
                                    hint="the registry sent the wrong content; nothing was stored")  # fmt: skip
            if got != digest:
                raise RegistryError(f"{self._where(repo)}: {what}: digest mismatch (got {got})",
                                    hint="the registry or a proxy altered the blob; nothing was stored")  # fmt: skip
        except BaseException:
            try:
                os.unlink(dest)
            except FileNotFoundError:
                pass
            raise

    def _download_once(self, repo: str, digest: str, f: IO[bytes], st: _DownloadState, size: int | None,
                       progress: Callable[[int], None] | None, abort: threading.Event | None, what: str,
                       sink: Callable[[bytes], None] | None = None) -> None:  # fmt: skip
        headers = {"Range": f"bytes={st.done}-"} if st.done else None
        r = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=self.pull_scope(repo), repo=repo,
                         what=f"pull {what}", headers=headers, stream=True, ok=(200, 206))  # fmt: skip
        try:
            if st.done and r.status_code == 200:  # Range ignored: start over
                if sink is not None:
                    raise ResumeUnsupported(f"pull {what}: {self._where(repo)} dropped the connection and cannot resume (no Range support)",
                                            hint="retry the pull")  # fmt: skip
                f.seek(0)
                f.truncate()
                st.reset()
                if progress:
                    progress(0)
            try:
                for b in r.iter_raw():
                    if abort is not None and abort.is_set():
                        raise Aborted()
                    f.write(b)
                    st.h.update(b)
                    if sink is not None:
                        sink(b)
                    st.done += len(b)
                    if size is not None and st.done > size:
                        raise RegistryError(f"{self._where(repo)}: {what}: more data than the {size} bytes the manifest says",
                                            hint="the registry sent the wrong content; nothing was stored")  # fmt: skip
                    if progress:
                        progress(st.done)
            except httpx.TransportError as e:
                raise self._transport_error(e, repo, f"pull {what}") from None
            if size is not None and st.done < size:
                raise RegistryConnectionError(f"pull {what}: {self._where(repo)} closed the connection after {st.done} of {size} bytes",
                                              hint="the registry dropped the connection; retry")  # fmt: skip
        finally:
            r.close()

    # --- push -----------------------------------------------------------------------------------------

    def start_upload(
        self, repo: str, mount: str | None = None, mount_from: str | None = None
    ) -> tuple[str | None, bool]:
        """POST an upload session; with `mount`/`mount_from`, try a cross-repository mount.

        Returns (upload URL, mounted).
        """
        path = f"/v2/{repo}/blobs/uploads/"
        if mount and mount_from:
            path += "?" + urllib.parse.urlencode({"mount": mount, "from": mount_from})
        r = self.request("POST", path, scope=self.push_scope(repo, mount_from), repo=repo,
                         what="push: start upload", ok=(201, 202))  # fmt: skip
        if r.status_code == 201:
            return None, True
        loc = r.headers.get("location")
        if not loc:
            raise RegistryError(f"push: {self._where(repo)} started an upload without a Location",
                                hint="the registry does not follow the distribution API")  # fmt: skip
        return urllib.parse.urljoin(self.base + path, loc), False

    def upload_blob(self, repo: str, path: Path, digest: str, size: int, *, chunk_size: int = 32 << 20,
                    mount_from: str | None = None, progress: Callable[[int], None] | None = None) -> str:  # fmt: skip
        """Upload a blob unless present; returns 'exists', 'mounted' or 'uploaded'.

        Blobs up to `chunk_size` go in one PUT; bigger ones in PATCH chunks of `chunk_size`.
        """
        scope = self.push_scope(repo, mount_from)
        if self.blob_exists(repo, digest, scope):
            return "exists"
        loc, mounted = self.start_upload(repo, digest if mount_from else None, mount_from)
        if mounted:
            return "mounted"
        assert loc is not None
        what = f"push blob {digest[:19]}"
        if size <= chunk_size:
            r = self.request("PUT", _with_query(loc, digest=digest), scope=scope, repo=repo, what=what,
                             headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                             content=lambda: _file_chunks(path, 0, size, progress), ok=(201,))  # fmt: skip
        else:
            off = 0
            while off < size:
                n = min(chunk_size, size - off)
                r = self.request("PATCH", loc, scope=scope, repo=repo, what=what,
                                 headers={"Content-Type": "application/octet-stream", "Content-Length": str(n),
                                          "Content-Range": f"{off}-{off + n - 1}"},
                                 content=lambda o=off, k=n: _file_chunks(path, o, k, progress, base=o),  # type: ignore[misc]
                                 ok=(202,))  # fmt: skip
                if r.headers.get("location"):
                    loc = urllib.parse.urljoin(loc, r.headers["location"])
                off += n
            r = self.request("PUT", _with_query(loc, digest=digest), scope=scope, repo=repo, what=what,
                             headers={"Content-Length": "0"}, content=b"", ok=(201,))  # fmt: skip
        got = r.headers.get("docker-content-digest")
        if got and got != digest:
            raise RegistryError(
                f"{what}: {self.registry} stored {got}", hint="the upload was altered in transit"
            )
        return "uploaded"

    def put_manifest(self, repo: str, ref: str, raw: bytes, media_type: str) -> str:
        r = self.request("PUT", f"/v2/{repo}/manifests/{ref}", scope=self.push_scope(repo), repo=repo,
                         what=f"push manifest {repo}:{ref}", headers={"Content-Type": media_type},
                         content=raw, ok=(201, 200))  # fmt: skip
        digest = sha256_bytes(raw)
        got = r.headers.get("docker-content-digest")
        if got and got != digest:
            raise RegistryError(f"push manifest {repo}:{ref}: {self.registry} stored {got}, expected {digest}",
                                hint="the registry rewrote the manifest")  # fmt: skip
        return digest


class _DownloadState:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.h = hashlib.sha256()
        self.done = 0


def _oversized(where: str, n: int) -> RegistryError:
    return RegistryError(f"{where}: manifest is larger than {MAX_MANIFEST_BYTES >> 20} MiB ({n} bytes)",
                         hint="refused: a genuine manifest is a few kB")  # fmt: skip


def _retry_after(v: str | None) -> float | None:
    if v is None:
        return 1.0
    try:
        return max(0.0, float(v))
    except ValueError:
        return None


def _with_query(url: str, **params: str) -> str:
    p = urllib.parse.urlsplit(url)
    q = urllib.parse.parse_qsl(p.query, keep_blank_values=True) + list(params.items())
    return urllib.parse.urlunsplit(p._replace(query=urllib.parse.urlencode(q)))


def _file_chunks(path: Path, offset: int, length: int, progress: Callable[[int], None] | None,
                 base: int = 0) -> Iterator[bytes]:  # fmt: skip
    sent = 0
    with open(path, "rb") as f:
        f.seek(offset)
        while sent < length:
            b = f.read(min(_CHUNK, length - sent))
            if not b:
                raise RegistryError(
                    f"push: {path} is shorter than expected", hint="the blob changed while pushing"
                )
            sent += len(b)
            if progress:
                progress(base + sent)
            yield b


def manifest_media_type(raw: bytes, content_type: str, what: str) -> str:
    """The media type of a fetched manifest; RegistryError for anything devbox cannot use."""
    ct = content_type.split(";", 1)[0].strip().lower()
    try:
        doc = json.loads(raw)
    except ValueError:
        raise RegistryError(f"{what}: the registry sent something that is not JSON ({ct or 'no type'})",
                            hint="the registry or a proxy is misbehaving") from None  # fmt: skip
    if not isinstance(doc, dict):
        raise RegistryError(f"{what}: not a manifest", hint="the registry or a proxy is misbehaving")
    body = doc.get("mediaType")
    if (
        doc.get("schemaVersion") == 1
        or "prettyjws" in ct
        or ct == "application/vnd.docker.distribution.manifest.v1+json"
    ):
        raise RegistryError(f"{what}: Docker schema 1 manifests are not supported",
                            hint="push the image again with a current tool (schema 2 / OCI)")  # fmt: skip
    known = MANIFEST_TYPES + INDEX_TYPES
    if ct in known:
        if body and body != ct:
            raise RegistryError(f"{what}: media type mismatch (header {ct}, body {body})",
                                hint="the manifest is malformed")  # fmt: skip
        return ct
    if body in known:
        return str(body)
    if ct in ("", "application/json", "application/octet-stream", "text/plain"):
        if "manifests" in doc:
            return OCI_INDEX
        if "config" in doc and "layers" in doc:
            return OCI_MANIFEST
    raise RegistryError(f"{what}: unsupported media type {ct or body or 'unknown'!r}",
                        hint="devbox reads OCI and Docker v2 manifests, image indexes and manifest lists")  # fmt: skip


@contextmanager
def client_for(registry: str, **kw: Any) -> Iterator[RegistryClient]:
    c = RegistryClient(registry, **kw)
    try:
        yield c
    finally:
        c.close()
