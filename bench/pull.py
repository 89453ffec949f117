#!/usr/bin/env python3
"""Pull + unpack of a ~90 MB (compressed) image from a local registry: devbox vs podman vs skopeo+tar.

    sudo .venv/bin/python bench/pull.py [--runs 5] [--rootfs-tar PATH] [--json out.json]

The image: one gzip layer made from a Debian bookworm rootfs tarball (default: the mmdebstrap tarball the
tests cache under /var/cache/devbox-test, built once if missing; ~234 MB uncompressed, ~92 MB gzip),
pushed with skopeo into Debian's docker-registry on 127.0.0.1 (no auth).

Each round, in alternating order, into fresh directories on a private tmpfs (the disk is a trap for this:
see shared/bench-anchors/RESULTS.md):
  devbox        `devbox pull -q REF` into an empty state root (download, verify, unpack, tag)
  devbox-stream the same with DEVBOX_PULL_STREAM=1 (unpack each layer while it downloads)
  podman        `podman pull` into empty storage (private containers.conf/storage.conf, as lib.sh does)
  skopeo+tar    `skopeo copy docker://REF oci:DIR` then `tar -xzf` of the layer blob
Prints medians (wall time of each command, Python start-up of the devbox CLI included) and ratios.
Target (issue 5): devbox <= 0.5x podman. Everything is removed at the end; the registry is killed by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEVBOX = REPO / ".venv" / "bin" / "devbox"
sys.path.insert(0, str(REPO / "tests"))

from registry_fixture import Podman, skopeo, start_registry, stop_registry  # noqa: E402


def default_rootfs_tar() -> Path:
    from images import debian_rootfs_tar  # the tests' per-machine cache

    return debian_rootfs_tar("bookworm")


def make_layout(rootfs_tar: Path, dest: Path) -> dict[str, int]:
    """An OCI layout around `rootfs_tar` (gzip) as the single layer, tagged `bench`."""
    import gzip
    import hashlib

    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    lh, dh, size = hashlib.sha256(), hashlib.sha256(), 0
    with open(rootfs_tar, "rb") as f, open(blobs / "layer.tmp", "wb") as out:
        while b := f.read(1 << 20):
            lh.update(b)
            out.write(b)
            size += len(b)
    with gzip.open(rootfs_tar, "rb") as g:
        usize = 0
        while b := g.read(1 << 20):
            dh.update(b)
            usize += len(b)
    os.rename(blobs / "layer.tmp", blobs / lh.hexdigest())

    def put(obj: dict[str, object]) -> tuple[str, int]:
        raw = json.dumps(obj).encode()
        d = hashlib.sha256(raw).hexdigest()
        (blobs / d).write_bytes(raw)
        return "sha256:" + d, len(raw)

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    cd, cs = put({"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/bash"]},
                  "rootfs": {"type": "layers", "diff_ids": ["sha256:" + dh.hexdigest()]}})  # fmt: skip
    md, ms = put({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
                  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                              "digest": "sha256:" + lh.hexdigest(), "size": size}]})  # fmt: skip
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
         "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}))  # fmt: skip
    return {"compressed": size, "uncompressed": usize}


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.monotonic()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"bench/pull: {' '.join(argv)} failed: {r.stderr.strip()[-500:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rootfs-tar", type=Path, default=None, help="gzip rootfs tarball to use as the layer")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/pull: run as root")
    rootfs = args.rootfs_tar or default_rootfs_tar()

    work = Path(tempfile.mkdtemp(prefix="dbxbench-pull-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16g,mode=0755", "dbxbench", str(work)], check=True)
    proc = None
    results: dict[str, list[float]] = {"devbox": [], "devbox-stream": [], "podman": [], "skopeo+tar": []}
    try:
        sizes = make_layout(rootfs, work / "layout")
        reg, proc = start_registry(work / "registry", with_auth=False)
        ref = reg.ref("bench/debian:bookworm")
        skopeo("copy", "--dest-tls-verify=false", f"oci:{work}/layout:bench", f"docker://{ref}", timeout=600)
        print(f"image: {sizes['compressed'] / 1e6:.1f} MB compressed, {sizes['uncompressed'] / 1e6:.1f} MB "
              f"uncompressed, one layer; registry {reg.host}; runs {args.runs}; all on tmpfs", flush=True)  # fmt: skip

        def run_devbox(i: int) -> float:
            env = dict(os.environ, DEVBOX_ROOT=str(work / f"devbox-{i}"), DEVBOX_PULL_STREAM="0",
                       DEVBOX_AUTH_FILE=str(work / "auth.json"))  # fmt: skip
            return timed([str(DEVBOX), "pull", "-q", ref], env)

        def run_devbox_stream(i: int) -> float:
            env = dict(os.environ, DEVBOX_ROOT=str(work / f"devbox-st-{i}"), DEVBOX_PULL_STREAM="1",
                       DEVBOX_AUTH_FILE=str(work / "auth.json"))  # fmt: skip
            return timed([str(DEVBOX), "pull", "-q", ref], env)

        def run_podman(i: int) -> float:
            pm = Podman(Path(tempfile.mkdtemp(prefix=f"pm{i}-", dir=work)))
            try:
                t0 = time.monotonic()
                r = pm("pull", "-q", "--tls-verify=false", ref, timeout=600)
                dt = time.monotonic() - t0
                if r.returncode != 0:
                    sys.exit(f"bench/pull: podman pull failed: {r.stderr.strip()[-500:]}")
                return dt
            finally:
                pm.cleanup()

        def run_skopeo(i: int) -> float:
            d = work / f"skopeo-{i}"
            d.mkdir()
            dt = timed(
                ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{d}/oci:x"]
            )
            idx = json.loads((d / "oci" / "index.json").read_text())
            man = json.loads(
                (d / "oci/blobs/sha256" / idx["manifests"][0]["digest"].split(":")[1]).read_text()
            )
            (d / "rootfs").mkdir()
            blob = d / "oci/blobs/sha256" / man["layers"][0]["digest"].split(":")[1]
            return dt + timed(["tar", "-C", str(d / "rootfs"), "-xzf", str(blob)])

        runners = [("devbox", run_devbox), ("podman", run_podman), ("skopeo+tar", run_skopeo),
                   ("devbox-stream", run_devbox_stream)]  # fmt: skip
        for i in range(args.runs):
            order = runners if i % 2 == 0 else list(reversed(runners))
            line = []
            for name, fn in order:
                dt = fn(i)
                results[name].append(dt)
                line.append(f"{name} {dt:.2f}s")
            print(f"round {i + 1}: " + ", ".join(line), flush=True)
        med = {k: statistics.median(v) for k, v in results.items()}
        print("\nmedian wall time (s):")
        for k, v in med.items():
            print(f"  {k:<15} {v:6.2f}   (min {min(results[k]):.2f}, max {max(results[k]):.2f})")
        print(f"\ndevbox / podman     = {med['devbox'] / med['podman']:.2f}x   (target <= 0.5x)")
        print(f"devbox / skopeo+tar = {med['devbox'] / med['skopeo+tar']:.2f}x")
        if args.json:
            args.json.write_text(json.dumps({"sizes": sizes, "runs": results, "median": med}, indent=2))
    finally:
        if proc is not None:
            stop_registry(proc)
        subprocess.run(["umount", "-l", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
