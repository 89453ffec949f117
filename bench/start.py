#!/usr/bin/env python3
"""`/bin/true` start-to-exit: `devbox run --rm --network none IMG /bin/true` against crun, runc,
systemd-nspawn and `podman run --rm --network none` (runc and crun) on the same bookworm root
(the cached mmdebstrap tar devbox's bootstrap uses), and devbox against crun on a busybox root.
Round-robin: each round runs every tool once, so load drifts hit all of them alike. Everything lives
on a tmpfs (rootfs, bundles, devbox state root, podman storage) that is removed at the end.

  bench/start.py [--runs 20] [--json OUT]

Peer commands are those of ../shared/bench-anchors/measure-start.sh (bundles from oci-bundle.sh,
the crun and podman work-arounds from lib.sh). Also prints devbox's time split: interpreter start,
imports (-X importtime), `devbox --version`, and the `--debug` step timings of one run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--podman-runs", type=int, default=5, help="podman joins only the first rounds")
    ap.add_argument("--json")
    a = ap.parse_args()
    out = [C.header("start: `/bin/true` start to exit")]
    # podman's storage gets a tmpfs of its own, on a short path (see C.PODMAN_TMPFS)
    with C.tmpfs("devbox-bench-start-") as t, C.tmpfs(C.PODMAN_TMPFS) as tp:
        dbx = C.devbox_env(t / "dbx")
        pod = C.podman_env(tp / "podman", "runc")
        podc = C.podman_env(tp / "podman-crun", "crun")
        crun_timer = None
        try:
            bw_tar = C.bookworm_tar()
            bb_tar = C.busybox_tar(t / "busybox.tar")
            roots = {"bookworm": C.extract(bw_tar, t / "rootfs-bookworm"),
                     "busybox": C.extract(bb_tar, t / "rootfs-busybox")}
            bundles = {}
            for name, r in roots.items():
                bundles[name] = t / f"bundle-{name}"
                C.run([str(C.ANCHORS / "oci-bundle.sh"), str(bundles[name]), "/bin/true"],
                      env=dict(os.environ, ROOTFS=str(r), ART=str(t / "art")))
            C.run([C.DEVBOX, "image", "import", str(bw_tar), "bench/bookworm:1"], env=dbx)
            C.run([C.DEVBOX, "image", "import", str(bb_tar), "bench/busybox:1"], env=dbx)
            for e in (pod, podc):
                C.run(["podman", "import", str(bw_tar), "localhost/bench-bookworm"], env=e)
            crun_timer = C.CrunNsTimer()
            B = str(bundles["bookworm"])
            BB = str(bundles["busybox"])
            nspawn = ["systemd-nspawn", "-D", str(roots["bookworm"]), "--quiet", "--pipe", "--register=no",
                      "--keep-unit"]
            cases = {
                "devbox bookworm": lambda: C.timed([C.DEVBOX, "run", "--rm", "--network", "none", "bench/bookworm:1",
                                                    "/bin/true"], env=dbx),
                "crun bookworm": lambda: crun_timer.timed(["crun", "run", "--bundle", B, "dbxbench-start"]),
                "runc bookworm": lambda: C.timed(["runc", "run", "--bundle", B, "dbxbench-start"]),
                "systemd-nspawn bookworm": lambda: C.timed(nspawn + ["/bin/true"]),
                "podman (runc) --network none": lambda: C.timed(
                    ["podman", "run", "--rm", "--network", "none", "localhost/bench-bookworm", "/bin/true"], env=pod),
                "podman (crun) --network none": lambda: crun_timer.timed(
                    ["podman", "run", "--rm", "--network", "none", "localhost/bench-bookworm", "/bin/true"], env=podc),
                "devbox busybox": lambda: C.timed([C.DEVBOX, "run", "--rm", "--network", "none", "bench/busybox:1",
                                                   "/bin/true"], env=dbx),
                "crun busybox": lambda: crun_timer.timed(["crun", "run", "--bundle", BB, "dbxbench-start"]),
            }
            res: dict[str, list[float]] = {k: [] for k in cases}
            for i in range(a.warmup + a.runs):
                for k, f in cases.items():
                    if k.startswith("podman") and i >= a.warmup + a.podman_runs:
                        continue
                    dt = f()
                    if i >= a.warmup:
                        res[k].append(dt)
            out.append(f"load average after the runs {C.loadavg()}\n")
            out.append("| how | median ms | min..max | N |\n|---|---:|---:|---:|")
            for k, xs in res.items():
                out.append(f"| {k} | {C.fmt_ms(xs)} |")
            d = res["devbox bookworm"]
            out.append("")
            out.append(f"- devbox/crun (bookworm): **{C.ratio(d, res['crun bookworm'])}**; "
                       f"devbox/runc: {C.ratio(d, res['runc bookworm'])}; "
                       f"devbox/podman(runc): **{C.ratio(d, res['podman (runc) --network none'])}**; "
                       f"devbox/podman(crun): {C.ratio(d, res['podman (crun) --network none'])} (target ≤ 0.40x); "
                       f"devbox/nspawn: {C.ratio(d, res['systemd-nspawn bookworm'])}")
            out.append(f"- devbox/crun (busybox): {C.ratio(res['devbox busybox'], res['crun busybox'])}")
            out.append(split(dbx, a.runs))
            if a.json:
                Path(a.json).write_text(json.dumps({k: C.stats(v) for k, v in res.items()}, indent=1))
        finally:
            if crun_timer:
                crun_timer.close()
            C.devbox_cleanup(dbx)
            C.podman_reset(pod)
            C.podman_reset(podc)
    print("\n".join(out))


def split(dbx: dict, runs: int) -> str:
    """Where devbox's start time goes: interpreter, imports, CLI dispatch, the rest (kernel work)."""
    n = max(5, runs // 2)
    cases = {
        "python -c pass (venv)": [C.PYTHON, "-c", "pass"],
        "python -I -S -c pass": [C.PYTHON, "-I", "-S", "-c", "pass"],
        "devbox --version": [C.DEVBOX, "--version"],
        "devbox run --rm --network none bookworm /bin/true": [C.DEVBOX, "run", "--rm", "--network", "none",
                                                              "bench/bookworm:1", "/bin/true"],
    }
    res = {k: [] for k in cases}
    for _ in range(n):
        for k, argv in cases.items():
            res[k].append(C.timed(argv, env=dbx, check=False))
    lines = ["\n#### devbox time split\n", "| step | median ms | min..max | N |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {C.fmt_ms(v)} |" for k, v in res.items()]
    rc = subprocess.run([C.DEVBOX, "--version"], env=dbx, capture_output=True).returncode
    if rc:
        lines.append(f"\n(`devbox --version` exits {rc} in this checkout: its time is that of the failure path)")
    # imports of the run path, from -X importtime (cumulative us of top-level imports)
    p = subprocess.run([C.PYTHON, "-X", "importtime", C.DEVBOX, "run", "--rm", "--network", "none",
                        "bench/bookworm:1", "/bin/true"], env=dbx, capture_output=True, text=True)
    top = []
    total = 0
    for ln in p.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", ln)
        if m and len(m.group(3)) == 1:
            total += int(m.group(2))
            top.append((int(m.group(2)), m.group(4)))
    top.sort(reverse=True)
    lines.append(f"\nimports on the `run` path (-X importtime, top level, cumulative): {total / 1e3:.1f} ms in total; "
                 "largest: " + ", ".join(f"{name} {us / 1e3:.1f} ms" for us, name in top[:8]))
    lines.append(profile(dbx, [C.DEVBOX, "run", "--rm", "--network", "none", "bench/bookworm:1", "/bin/true"]))
    return "\n".join(lines)


def profile(env: dict, argv: list[str], top: int = 15) -> str:
    """cProfile of one devbox command: the functions with the largest own time (syscalls, waits)."""
    import pstats
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".prof") as f:
        # devbox's fast verbs leave with os._exit (no interpreter teardown), which would also skip
        # cProfile's writing of its file: profile main() in-process with an ordinary exit instead
        code = ("import cProfile, sys; import devbox.cli as cli; cli._leave = sys.exit; "
                "sys.argv = sys.argv[1:]; cProfile.run('cli.main()', sys.argv.pop(0))")  # fmt: skip
        subprocess.run([C.PYTHON, "-c", code, f.name] + argv, env=env, capture_output=True)
        st = pstats.Stats(f.name)
        rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
        total = st.total_tt
    lines = [f"\ncProfile of `{' '.join(Path(argv[0]).name if i == 0 else x for i, x in enumerate(argv))}`: "
             f"{total * 1e3:.0f} ms profiled; largest own times:\n",
             "| function | own ms | cumulative ms | calls |", "|---|---:|---:|---:|"]
    for (fn, ln, name), (cc, nc, tt, ct, _) in rows:
        where = f"{Path(fn).name}:{ln}" if ln else fn
        lines.append(f"| `{name}` ({where}) | {tt * 1e3:.1f} | {ct * 1e3:.1f} | {nc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
