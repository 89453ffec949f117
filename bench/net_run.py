#!/usr/bin/env python3
"""Start latency with networking: devbox vs podman, in one run.

    sudo .venv/bin/python bench/net_run.py [--runs 20] [--warmup 3] [--json out.json]

Times, interleaved round by round (each command once per round, no shell; see `interleaved`):
  devbox-net-port   devbox run --rm --network NET -p P:P IMG /bin/true
  devbox-net        devbox run --rm --network NET IMG /bin/true
  devbox-none       devbox run --rm --network none IMG /bin/true          (the floor without networking)
  podman-default    podman run --rm IMG /bin/true                          (podman's default network)
  podman-port       podman run --rm -p P:P IMG /bin/true
and prints medians and devbox/podman ratios (the target in issue 3 is devbox-net-port <= 0.2x podman-default).

Both tools run the same image: the tiny busybox rootfs the tests use (tests/images.py), imported into
a private devbox state root and into podman's storage. podman is configured exactly as the anchor
scripts do it (shared/bench-anchors/lib.sh: podman_env, private storage and containers.conf under
$ART, runc, cgroupfs); set BENCH_ANCHORS to that directory if it is not ../shared/bench-anchors.
Everything the script creates on the devbox side (state root, network, bridge, nft table) is removed
at the end; podman's image stays in its private storage under $ART for the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEVBOX = REPO / ".venv" / "bin" / "devbox"
ANCHORS = Path(os.environ.get("BENCH_ANCHORS", REPO.parent / "shared" / "bench-anchors"))
PODMAN_IMAGE = "localhost/dbxbench/busybox:latest"


def podman_env() -> dict[str, str]:
    """The environment lib.sh's podman_env sets up (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF)."""
    lib = ANCHORS / "lib.sh"
    if not lib.exists():
        sys.exit(f"net_run: {lib} not found (set BENCH_ANCHORS)")
    out = subprocess.run(
        ["bash", "-c", f". {lib} >/dev/null; podman_env; env -0"], capture_output=True, check=True, cwd=ANCHORS
    ).stdout
    env = dict(os.environ)
    for item in out.split(b"\0"):
        if item.startswith(b"CONTAINERS_"):
            k, v = item.decode().split("=", 1)
            env[k] = v
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def interleaved(cmds: dict[str, tuple[list[str], dict[str, str]]], runs: int, warmup: int) -> dict[str, list[float]]:
    """Time every command once per round, in a rotating order, for warmup + runs rounds (the first
    `warmup` not counted). Interleaving keeps the disk's slow phases (RESULTS.md: file creation slows for minutes
    after a large delete) and the machine's load from landing on one tool only. Each run is a
    posix_spawn + waitpid of the command itself (no shell), like hyperfine -N; output goes to
    /dev/null; a non-zero exit stops the benchmark."""
    import time

    res: dict[str, list[float]] = {name: [] for name in cmds}
    null = os.open(os.devnull, os.O_RDWR)
    fa = [("dup2", null, 0), ("dup2", null, 1), ("dup2", null, 2)]
    actions = [(os.POSIX_SPAWN_DUP2, src, dst) for _kind, src, dst in fa]
    try:
        names = list(cmds)
        for i in range(warmup + runs):
            # rotate the order each round: every command follows every other one equally often (a
            # podman run leaves cleanup work in the kernel that slows whatever comes right after it)
            for name in names[i % len(names) :] + names[: i % len(names)]:
                argv, env = cmds[name]
                t0 = time.perf_counter()
                pid = os.posix_spawnp(argv[0], argv, env, file_actions=actions)
                _, status = os.waitpid(pid, 0)
                dt = time.perf_counter() - t0
                if os.waitstatus_to_exitcode(status) != 0:
                    sys.exit(f"net_run: {name} failed (exit {os.waitstatus_to_exitcode(status)}): {' '.join(argv)}")
                if i >= warmup:
                    res[name].append(dt)
    finally:
        os.close(null)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write medians and ratios here")
    ap.add_argument("--no-podman", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("net_run: needs root")

    sys.path.insert(0, str(REPO / "tests"))
    from images import make_busybox_rootfs_tar  # the same tiny image the tests use

    # Time an installed devbox, not one compiled from source on every run (PYTHONDONTWRITEBYTECODE=1 in
    # some environments keeps the import system from caching bytecode; compileall writes it anyway).
    subprocess.run([sys.executable, "-m", "compileall", "-f", "-q", str(REPO / "devbox")], check=False)
    work = Path(tempfile.mkdtemp(prefix="dbx-netbench-", dir="/var/tmp"))
    root = work / "state"
    env = dict(os.environ, DEVBOX_ROOT=str(root))
    net = "netbench"
    try:
        tar = make_busybox_rootfs_tar(work / "busybox.tar.gz")
        subprocess.run(
            [sys.executable, "-c",
             "import sys; from pathlib import Path; from devbox.runtime.image import importer; "
             "from devbox.runtime.image.store import ImageStore; "
             "importer.import_archive(ImageStore(Path(sys.argv[1])), Path(sys.argv[2]), 'busybox:bench')",
             str(root), str(tar)],
            check=True, env=env,
        )  # fmt: skip
        subprocess.run([str(DEVBOX), "network", "create", net], check=True, env=env, stdout=subprocess.DEVNULL)
        port = free_port()
        cmds = {
            "devbox-net-port": [str(DEVBOX), "run", "--rm", "--network", net, "-p", f"{port}:{port}", "busybox:bench", "/bin/true"],
            "devbox-net": [str(DEVBOX), "run", "--rm", "--network", net, "busybox:bench", "/bin/true"],
            "devbox-none": [str(DEVBOX), "run", "--rm", "--network", "none", "busybox:bench", "/bin/true"],
        }  # fmt: skip
        timed = {name: (argv, env) for name, argv in cmds.items()}
        if not args.no_podman and shutil.which("podman"):
            penv = podman_env()
            if subprocess.run(["podman", "image", "exists", PODMAN_IMAGE], env=penv).returncode != 0:
                subprocess.run(["podman", "import", str(tar), PODMAN_IMAGE], env=penv, check=True, stdout=subprocess.DEVNULL)
            timed["podman-default"] = (["podman", "run", "--rm", PODMAN_IMAGE, "/bin/true"], penv)
            pport = free_port()  # a port of its own: podman's cleanup of it never meets devbox's run
            while pport == port:
                pport = free_port()
            timed["podman-port"] = (["podman", "run", "--rm", "-p", f"{pport}:{pport}", PODMAN_IMAGE, "/bin/true"], penv)
        times = interleaved(timed, args.runs, args.warmup)
    finally:
        subprocess.run([str(DEVBOX), "network", "rm", "-f", net], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"{'command':18} {'median ms':>10} {'min ms':>8}")
    for k, v in times.items():
        print(f"{k:18} {med[k]:10.1f} {min(v) * 1000:8.1f}")
    ratios = {}
    if "podman-default" in med:
        for k in ("devbox-net-port", "devbox-net", "devbox-none"):
            ratios[f"{k}/podman-default"] = med[k] / med["podman-default"]
        ratios["devbox-net-port/podman-port"] = med["devbox-net-port"] / med["podman-port"]
        for k, r in ratios.items():
            print(f"{k:34} {r:.2f}x")
        print("target: devbox-net-port/podman-default <= 0.20x")
    if args.json:
        samples = {k: [round(x * 1000, 2) for x in v] for k, v in times.items()}
        args.json.write_text(json.dumps({"median_ms": med, "ratios": ratios, "samples_ms": samples}, indent=2) + "\n")


if __name__ == "__main__":
    main()
