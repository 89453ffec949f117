"""Shared helpers for the devbox benchmarks (start.py, up.py).

Timing, medians, load average, tmpfs-backed scratch dirs (devbox state roots, podman storage,
root filesystems: see the disk trap in ../shared/bench-anchors/RESULTS.md), and the peer
work-arounds of ../shared/bench-anchors/lib.sh (podman_env, in_crun_ns), which are called from
there rather than copied.
"""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ANCHORS = Path(os.environ.get("ANCHORS", REPO.parent / "shared" / "bench-anchors"))
LIB_SH = ANCHORS / "lib.sh"
DEVBOX = str(REPO / ".venv" / "bin" / "devbox")
PYTHON = str(REPO / ".venv" / "bin" / "python")
BOOTSTRAP_CACHE = Path(os.environ.get("DEVBOX_BOOTSTRAP_CACHE", "/var/cache/devbox-test"))


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def stats(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)} if xs else {}


def fmt_ms(xs: list[float]) -> str:
    s = stats(xs)
    return f"{s['median'] * 1e3:.1f} | {s['min'] * 1e3:.1f}..{s['max'] * 1e3:.1f} | {s['n']}"


def fmt_s(xs: list[float]) -> str:
    s = stats(xs)
    return f"{s['median']:.2f} | {s['min']:.2f}..{s['max']:.2f} | {s['n']}"


def ratio(a: list[float], b: list[float]) -> str:
    return f"{statistics.median(a) / statistics.median(b):.2f}x" if a and b else "-"


def timed(argv: list[str], env: dict | None = None, check: bool = True, **kw) -> float:
    """Wall time of one command, seconds (output discarded unless redirected by kw)."""
    kw.setdefault("stdout", subprocess.DEVNULL)
    kw.setdefault("stderr", subprocess.PIPE)
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, **kw)
    dt = time.perf_counter() - t0
    if check and p.returncode != 0:
        raise RuntimeError(f"{argv!r} exited {p.returncode}: {(p.stderr or b'')[-800:]!r}")
    return dt


def run(argv: list[str], env: dict | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    p = subprocess.run(argv, env=env, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{argv!r} exited {p.returncode}: {p.stderr[-800:]!r}")
    return p


@contextlib.contextmanager
def tmpfs(prefix: str = "devbox-bench-", size: str = "4g"):
    """A fresh tmpfs mounted on a new directory; unmounted and removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        for _ in range(5):
            if subprocess.run(["umount", str(d)], stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.5)
        else:
            subprocess.run(["umount", "-l", str(d)])
        with contextlib.suppress(OSError):
            d.rmdir()


def devbox_env(root: Path, **extra) -> dict:
    # with PYTHONDONTWRITEBYTECODE set (as in some shells here), stale .pyc files are never refreshed
    # and every devbox command recompiles the modules changed since (~100 ms): measure what a user
    # gets, with bytecode up to date
    subprocess.run([PYTHON, "-m", "compileall", "-f", "-q", str(REPO / "devbox")], capture_output=True)
    env = dict(os.environ, DEVBOX_ROOT=str(root))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def devbox_cleanup(env: dict, project_files: list[Path] = (), networks: list[str] = ()) -> None:
    """Remove everything devbox made under env's DEVBOX_ROOT (before the tmpfs is unmounted)."""
    for f in project_files:
        subprocess.run([DEVBOX, "destroy", "-f", "--file", str(f)], env=env, capture_output=True)
    subprocess.run([DEVBOX, "rm", "-f", "--all"], env=env, capture_output=True)
    for n in networks:
        subprocess.run([DEVBOX, "network", "rm", "-f", n], env=env, capture_output=True)


def lib_sh(script: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a bash snippet with the anchors' lib.sh sourced."""
    return subprocess.run(["bash", "-c", f". {LIB_SH}; {script}"], env=env, capture_output=True, text=True,
                          check=True)


# podman's storage lives on a tmpfs mounted at /tmp/<PODMAN_TMPFS>XXXXXXXX: keep that path short. conmon
# puts the container's attach socket under the runroot (containers-run/overlay-containers/<64 hex>/
# userdata/attach); on /tmp/devbox-bench-podman-XXXXXXXX that outgrew a unix socket's 108-byte path
# and every `podman run --rm` waited 20 s ("Exceeded conmon timeout waiting for container to exit").
PODMAN_TMPFS = "dbp-"


def podman_env(art: Path, runtime: str = "runc") -> dict:
    """Environment for podman with lib.sh's work-arounds, storage and config under `art`."""
    env = dict(os.environ, ART=str(art), PODMAN_RUNTIME=runtime)
    out = lib_sh('podman_env; echo "$CONTAINERS_CONF"; echo "$CONTAINERS_STORAGE_CONF"', env).stdout.split("\n")
    env["CONTAINERS_CONF"], env["CONTAINERS_STORAGE_CONF"] = out[0], out[1]
    return env


def podman_reset(env: dict) -> None:
    """Remove every container and image of this private podman storage (call before unmounting it)."""
    subprocess.run(["podman", "rm", "-a", "-f", "-t", "0"], env=env, capture_output=True)
    subprocess.run(["podman", "system", "reset", "-f"], env=env, capture_output=True)


class CrunNsTimer:
    """A timing server running inside lib.sh's `in_crun_ns` (a private mount namespace without the
    cgroup v2 hierarchy, which crun 1.8 needs on this hybrid host), so that crun's start can be
    timed without the cost of entering that namespace each time."""

    def __init__(self, env: dict | None = None):
        self.p = subprocess.Popen(
            ["bash", "-c", f". {LIB_SH}; in_crun_ns {sys.executable} -u {__file__} serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def timed(self, argv: list[str], env: dict | None = None) -> float:
        self.p.stdin.write(json.dumps({"argv": argv, "env": env}) + "\n")
        self.p.stdin.flush()
        r = json.loads(self.p.stdout.readline())
        if r["rc"] != 0:
            raise RuntimeError(f"{argv!r} exited {r['rc']}: {r['err']}")
        return r["t"]

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait(timeout=30)


def _serve() -> None:
    for line in sys.stdin:
        req = json.loads(line)
        t0 = time.perf_counter()
        p = subprocess.run(req["argv"], env=req["env"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        dt = time.perf_counter() - t0
        print(json.dumps({"t": dt, "rc": p.returncode, "err": p.stderr[-500:].decode(errors="replace")}), flush=True)


def bookworm_tar() -> Path:
    """The cached mmdebstrap bookworm rootfs (python3 + supervisor) that devbox's own bootstrap uses."""
    sys.path.insert(0, str(REPO))
    from devbox.runtime.image.bootstrap import cache_path
    p = cache_path(BOOTSTRAP_CACHE, "bookworm")
    if not p.exists():
        sys.path.insert(0, str(REPO / "tests"))
        from images import debian_rootfs_tar  # builds it once
        p = debian_rootfs_tar("bookworm")
    return p


def busybox_tar(out: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO))
    from images import make_busybox_rootfs_tar
    return make_busybox_rootfs_tar(out)


def extract(tar: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-C", str(dest), "-xf", str(tar)], check=True)
    return dest


def header(title: str) -> str:
    return (f"\n### {title}\n\n`{' '.join(sys.argv)}` — {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}, "
            f"load average at start {loadavg()}, {os.cpu_count()} cores\n")


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    _serve()
