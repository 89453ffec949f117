"""Real registries for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1.

Session fixtures (use them with `from registry_fixture import registry, registry_noauth  # noqa: F401`
in a test module, or `pytest_plugins = ["registry_fixture"]` in a conftest):

  registry         htpasswd (bcrypt) basic auth; user/password in `.user` / `.password`
  registry_noauth  no auth

Each runs on a free port with its storage in a temp dir, is waited for with a deadline, and is killed by
its pid in the finalizer. Helpers: `make_oci_layout` (a tiny OCI image layout, for skopeo), `skopeo`,
`Podman` (podman with private config/storage and runc, as in bench-anchors/lib.sh).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REGISTRY_BIN = "/usr/bin/docker-registry"
USER = "devbox"
PASSWORD = "s3cret-pass"


@dataclass
class Registry:
    host: str  # "127.0.0.1:PORT"
    port: int
    storage: Path
    pid: int
    user: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def ref(self, name: str) -> str:
        return f"{self.host}/{name}"

    @property
    def creds(self) -> str:
        return f"{self.user}:{self.password}"

    def skopeo_creds(self, flag: str = "--dest-creds") -> list[str]:
        return [flag, self.creds] if self.user else []

    def blob_data_path(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait_ready(reg: Registry, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"{reg.url}/v2/", timeout=1).close()
            return
        except urllib.error.HTTPError as e:
            if e.code == 401:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"docker-registry on {reg.host} did not answer within the deadline")


def start_registry(base: Path, with_auth: bool) -> tuple[Registry, subprocess.Popen[bytes]]:
    base.mkdir(parents=True, exist_ok=True)
    storage = base / "storage"
    storage.mkdir(exist_ok=True)
    cfg = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": "127.0.0.1:0"},
    }
    if with_auth:
        line = subprocess.run(
            ["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True
        )
        (base / "htpasswd").write_text(line.stdout.strip() + "\n")
        cfg["auth"] = {"htpasswd": {"realm": "devbox-test", "path": str(base / "htpasswd")}}
    last: Exception | None = None
    for _ in range(5):  # the free port may be taken between probe and bind: try another
        port = free_port()
        cfg["http"] = {"addr": f"127.0.0.1:{port}"}
        (base / "config.yml").write_text(json.dumps(cfg))  # JSON is YAML
        log = open(base / "registry.log", "ab")
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(base / "config.yml")], stdout=log, stderr=log,
                                start_new_session=True)  # fmt: skip
        log.close()
        reg = Registry(f"127.0.0.1:{port}", port, storage, proc.pid, USER if with_auth else None,
                       PASSWORD if with_auth else None)  # fmt: skip
        try:
            _wait_ready(reg, proc, time.monotonic() + 15)
            return reg, proc
        except RuntimeError as e:
            last = e
            stop_registry(proc)
    raise RuntimeError(f"cannot start docker-registry: {last}; see {base / 'registry.log'}")


def stop_registry(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def _registry_fixture(with_auth: bool) -> Iterator[Registry]:
    if not os.path.exists(REGISTRY_BIN) or not shutil.which("htpasswd"):
        pytest.skip("needs Debian's docker-registry and apache2-utils (htpasswd)")
    base = Path(tempfile.mkdtemp(prefix="dbxreg-"))
    reg, proc = start_registry(base, with_auth)
    try:
        yield reg
    finally:
        stop_registry(proc)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """docker-registry with htpasswd basic auth (user `devbox`)."""
    yield from _registry_fixture(True)


@pytest.fixture(scope="session")
def registry_noauth() -> Iterator[Registry]:
    """docker-registry without auth."""
    yield from _registry_fixture(False)


# --- image content for skopeo / podman ------------------------------------------------------------


def _sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def layer_tar(files: dict[str, bytes], mtime: int = 1700000000) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = sorted({os.path.dirname(n) for n in files if os.path.dirname(n)})
        for d in dirs:
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, mtime
            tf.addfile(ti)
        for name, data in sorted(files.items()):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, mtime
            tf.addfile(ti, io.BytesIO(data))
    return raw.getvalue()


def make_oci_layout(dest: Path, files: dict[str, bytes], tag: str = "latest",
                    platforms: tuple[tuple[str, str | None], ...] = ()) -> dict[str, str]:  # fmt: skip
    """Write an OCI image layout with one gzip layer of `files`.

    Without `platforms`: one manifest (for this machine's arch) tagged `tag`. With platforms
    (("amd64", None), ("arm64", "v8")...): an image index over one manifest per platform, each with a
    file /arch naming its platform. Returns {"manifest": digest, "index": digest?, "layer": digest...}.
    """
    import platform as _p

    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def put(b: bytes) -> str:
        d = _sha(b)
        (blobs / d.split(":")[1]).write_bytes(b)
        return d

    def manifest_for(
        arch: str, variant: str | None, extra: dict[str, bytes]
    ) -> tuple[dict[str, object], bytes]:
        tar = layer_tar({**files, **extra})
        gz = gzip.compress(tar, mtime=0)
        ldig = put(gz)
        cfg: dict[str, object] = {"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                                  "rootfs": {"type": "layers", "diff_ids": [_sha(tar)]},
                                  "created": "2024-01-01T00:00:00Z"}  # fmt: skip
        if variant:
            cfg["variant"] = variant
        cb = json.dumps(cfg).encode()
        m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
             "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(cb), "size": len(cb)},
             "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ldig,
                         "size": len(gz)}]}  # fmt: skip
        mb = json.dumps(m).encode()
        return m, mb

    out: dict[str, str] = {}
    if not platforms:
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(_p.machine(), _p.machine())
        m, mb = manifest_for(arch, None, {})
        out["manifest"] = put(mb)
        out["layer"] = m["layers"][0]["digest"]  # type: ignore[index]
        entry = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": out["manifest"], "size": len(mb),
                 "annotations": {"org.opencontainers.image.ref.name": tag}}  # fmt: skip
    else:
        mans = []
        for arch, variant in platforms:
            plat = "/".join(x for x in ("linux", arch, variant) if x)
            m, mb = manifest_for(arch, variant, {"arch": plat.encode() + b"\n"})
            d = put(mb)
            out[plat] = d
            p: dict[str, str] = {"os": "linux", "architecture": arch}
            if variant:
                p["variant"] = variant
            mans.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": len(mb),
                         "platform": p})  # fmt: skip
        idx = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": mans}
        ib = json.dumps(idx).encode()
        out["index"] = put(ib)
        entry = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": out["index"], "size": len(ib),
                 "annotations": {"org.opencontainers.image.ref.name": tag}}  # fmt: skip
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return out


def skopeo(*args: str, timeout: float = 120) -> str:
    r = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if r.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


class Podman:
    """podman with private containers.conf/storage.conf under `base` (runc, cgroupfs, file events)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        import resource

        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        if nproc == resource.RLIM_INFINITY or nproc > 32768:
            nproc = 32768
        (base / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{base}/root"\nrunroot = "{base}/run"\n'
        )
        (base / "containers.conf").write_text(
            f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
            '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "runc"\n'
            f'tmp_dir = "{base}/tmp"\n'
        )
        self.env = dict(os.environ, CONTAINERS_CONF=str(base / "containers.conf"),
                        CONTAINERS_STORAGE_CONF=str(base / "storage.conf"))  # fmt: skip

    def __call__(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", "--root", f"{self.base}/root", "--runroot", f"{self.base}/run",
                               "--tmpdir", f"{self.base}/tmp", *args],
                              env=self.env, capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip

    def cleanup(self) -> None:
        self("rm", "-a", "-f", timeout=60)
        self("rmi", "-a", "-f", timeout=60)
        self("system", "reset", "-f", timeout=60)
        subprocess.run(["umount", "-R", "-l", f"{self.base}/root/overlay"], capture_output=True, check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.base)], check=False)
