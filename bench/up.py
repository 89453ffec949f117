#!/usr/bin/env python3
"""`devbox up` of a 3-box project (issue 4 point 9) against podman starting the same three images
with supervisord, in one run, alternating devbox and podman.

Project: boxes a, b, c on debian:bookworm, one supervisord program each (`sleep infinity`);
variant `startsecs0` (RUNNING at once) and `startsecs1` (supervisor's default: the program must stay
up 1 s before it counts as RUNNING).  `devbox up` returns once every service is healthy
(= RUNNING, no health check), so its wall time is the measure.

  (a) warm:   images cached, boxes halted (`devbox halt`), time `devbox up`           target <= 1.0 s
  (b) no-op:  boxes running, time `devbox up`                                          target <= 0.3 s
  (d) podman: the bootstrap rootfs `podman import`ed; 3 x `podman run -d ... supervisord -n -c CONF`
              (conf with the same program and startsecs, socket in a bind-mounted host dir), then
              XML-RPC getAllProcessInfo over the unix socket (sv_bench.py's transport) every 2 ms
              until all three are RUNNING; also `podman start` of the 3 stopped containers (the
              closest to "halted boxes").
  (c) cold (--cold, or --cold-only for just this): the very mmdebstrap command devbox runs (same
              suite, variant, packages incl. devbox's defaults + redis-server, mirror, keyring) writing
              a tar on tmpfs vs `devbox up` of a one-box project with packages [redis-server] in an
              empty state root on tmpfs, no bootstrap cache; TMPDIR on tmpfs for both; alternated with
              the order flipped every round, --cold-runs each.

  bench/up.py [--runs 7] [--cold | --cold-only] [--cold-runs 2]

State roots and podman storage are on tmpfs mounts made here and removed at the end.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

sys.path.insert(0, str(C.ANCHORS))

BOXES = ("a", "b", "c")

DEVBOXFILE = "name: NAME\nboxes:\n" + "".join(
    f"  {b}:\n    base: debian:bookworm\n    services:\n      s: {{command: sleep infinity SS}}\n" for b in BOXES)

SVCONF = """[unix_http_server]
file=/sv/supervisor.sock

[supervisord]
nodaemon=true
logfile=/sv/supervisord.log
pidfile=/sv/supervisord.pid
childlogdir=/sv

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:s]
command=/bin/sleep infinity
{startsecs}
"""


def project(root: Path, name: str, startsecs: int | None) -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    ss = "" if startsecs is None else f", startsecs: {startsecs}"
    (d / "Devboxfile").write_text(DEVBOXFILE.replace("NAME", name).replace(" SS", ss))
    return d / "Devboxfile"


def rpc_state(sock: Path) -> list[str] | None:
    import xmlrpc.client

    from sv_bench import _UnixTransport
    if not sock.exists():
        return None
    try:
        proxy = xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(str(sock)))
        return [p["statename"] for p in proxy.supervisor.getAllProcessInfo()]
    except (OSError, xmlrpc.client.Fault, xmlrpc.client.ProtocolError):
        return None


def wait_running(socks: list[Path], timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    pending = list(socks)
    while pending:
        pending = [s for s in pending if rpc_state(s) != ["RUNNING"]]
        if pending and time.monotonic() > end:
            raise RuntimeError(f"not RUNNING after {timeout}s: {pending}")
        if pending:
            time.sleep(0.002)


class Podman:
    def __init__(self, env: dict, scratch: Path, tag: str, startsecs: int | None):
        self.env, self.tag = env, tag
        self.dirs = []
        for b in BOXES:
            d = scratch / f"sv-{tag}-{b}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "supervisord.conf").write_text(
                SVCONF.format(startsecs="" if startsecs is None else f"startsecs={startsecs}"))
            self.dirs.append(d)

    def _clear(self):
        for d in self.dirs:
            for f in d.iterdir():
                if f.name != "supervisord.conf":
                    f.unlink()

    def run(self) -> float:
        """podman run -d x3 until all RUNNING; containers are left stopped? no: left running."""
        self._clear()
        t0 = time.perf_counter()
        for b, d in zip(BOXES, self.dirs):
            C.run(["podman", "run", "-d", "--name", f"dbxbench-{self.tag}-{b}", "--network", "none",
                   "-v", f"{d}:/sv", "localhost/bench-bookworm",
                   "/usr/bin/supervisord", "-n", "-c", "/sv/supervisord.conf"], env=self.env)
        wait_running([d / "supervisor.sock" for d in self.dirs])
        return time.perf_counter() - t0

    def start(self) -> float:
        self._clear()
        t0 = time.perf_counter()
        C.run(["podman", "start"] + [f"dbxbench-{self.tag}-{b}" for b in BOXES], env=self.env)
        wait_running([d / "supervisor.sock" for d in self.dirs])
        return time.perf_counter() - t0

    def stop(self):
        C.run(["podman", "stop", "-t", "2"] + [f"dbxbench-{self.tag}-{b}" for b in BOXES], env=self.env)

    def rm(self):
        subprocess.run(["podman", "rm", "-f", "-t", "0"] + [f"dbxbench-{self.tag}-{b}" for b in BOXES],
                       env=self.env, capture_output=True)


def warm(a, out: list[str]) -> None:
    with C.tmpfs("devbox-bench-up-") as t, C.tmpfs(C.PODMAN_TMPFS) as tp:
        dbx = C.devbox_env(t / "dbx", DEVBOX_BOOTSTRAP_CACHE=C.BOOTSTRAP_CACHE)
        pod = C.podman_env(tp / "podman", "runc")
        files = {}
        try:
            files = {"startsecs0": project(t, "benchup0", 0), "startsecs1": project(t, "benchup1", None)}
            for f in files.values():   # first up: bootstrap (from the cache) + create; not timed
                C.run([C.DEVBOX, "up", "--file", str(f)], env=dbx, timeout=600)
            C.run(["podman", "import", str(C.bookworm_tar()), "localhost/bench-bookworm"], env=pod)
            pods = {"startsecs0": Podman(pod, tp, "s0", 0), "startsecs1": Podman(pod, tp, "s1", None)}
            res = {}
            for i in range(a.warmup + a.runs):
                for v, f in files.items():
                    up = [C.DEVBOX, "up", "--file", str(f)]
                    # (b) no-change up on running boxes
                    tb = C.timed(up, env=dbx)
                    # (a) warm up of halted boxes
                    C.run([C.DEVBOX, "halt", "--file", str(f)], env=dbx)
                    ta = C.timed(up, env=dbx)
                    # (d) podman run -d x3 until RUNNING, then podman start of the stopped ones
                    p = pods[v]
                    td = p.run()
                    p.stop()
                    ts = p.start()
                    p.rm()
                    if i >= a.warmup:
                        for k, x in (("a", ta), ("b", tb), ("d-run", td), ("d-start", ts)):
                            res.setdefault((v, k), []).append(x)
            out.append(f"load average after the warm runs {C.loadavg()}\n")
            out.append("| case | median s | min..max | N | target | ratio to podman run -d |")
            out.append("|---|---:|---:|---:|---|---:|")
            for v in files:
                pr = res[(v, "d-run")]
                out.append(f"| (a) devbox up, 3 halted boxes -> all RUNNING, {v} | {C.fmt_s(res[(v, 'a')])} | "
                           f"≤ 1.0 s | {C.ratio(res[(v, 'a')], pr)} |")
                out.append(f"| (b) devbox up, no change, 3 running boxes, {v} | {C.fmt_s(res[(v, 'b')])} | "
                           f"≤ 0.3 s | - |")
                out.append(f"| (d) podman run -d x3 (runc) -> all RUNNING, {v} | {C.fmt_s(pr)} | peer | 1.00x |")
                out.append(f"| (d) podman start x3 stopped -> all RUNNING, {v} | {C.fmt_s(res[(v, 'd-start')])} "
                           f"| peer | {C.ratio(res[(v, 'd-start')], pr)} |")
            for v in files:
                out.append(f"- {v}: devbox warm up / podman start = "
                           f"{C.ratio(res[(v, 'a')], res[(v, 'd-start')])}")
            if a.profile:
                from start import profile
                f = files["startsecs0"]
                C.run([C.DEVBOX, "up", "--file", str(f)], env=dbx)
                out.append(profile(dbx, [C.DEVBOX, "up", "--file", str(f)]) + "\n\n(no-change up)")
                C.run([C.DEVBOX, "halt", "--file", str(f)], env=dbx)
                out.append(profile(dbx, [C.DEVBOX, "up", "--file", str(f)]) + "\n\n(warm up of halted boxes)")
        finally:
            for p in locals().get("pods", {}).values():
                p.rm()
            C.devbox_cleanup(dbx, list(files.values()))
            C.podman_reset(pod)


def cold(a, out: list[str]) -> None:
    """(c): mmdebstrap alone vs devbox's cold `up`, alternating (the order flips every round).

    mmdebstrap gets exactly the command devbox runs (bootstrap.mmdebstrap_argv: same suite, variant,
    packages incl. devbox's defaults, keyring, mirror, --skip=output/dev, --format=tar) except that it
    writes the tar to a file on the scratch tmpfs instead of stdout. Both run with TMPDIR on that tmpfs
    (mmdebstrap builds its chroot under TMPDIR) and devbox's state root on it too, so neither pays the
    disk's slow-create-after-delete trap; packages are downloaded from the mirror every time."""
    sys.path.insert(0, str(C.REPO))
    from devbox.runtime.image.bootstrap import _package_list, find_mirror, mmdebstrap_argv
    mirror, keyring = find_mirror()
    pkgs = _package_list(["redis-server"])
    argv = mmdebstrap_argv("bookworm", pkgs, mirror, keyring)
    res = {"mmdebstrap": [], "devbox": []}

    def run_mmdebstrap():
        with C.tmpfs("devbox-bench-cold-") as t:
            (t / "tmp").mkdir()
            # the environment devbox's own mmdebstrap gets
            env = C.devbox_env(t / "unused", TMPDIR=str(t / "tmp"))
            res["mmdebstrap"].append(C.timed(argv[:-2] + [str(t / "rootfs.tar"), argv[-1]], env=env, timeout=1200))

    def run_devbox():
        with C.tmpfs("devbox-bench-cold-") as t:
            (t / "tmp").mkdir()
            env = C.devbox_env(t / "dbx", TMPDIR=str(t / "tmp"))
            env.pop("DEVBOX_BOOTSTRAP_CACHE", None)
            d = t / "proj"
            d.mkdir()
            (d / "Devboxfile").write_text("name: benchcold\nboxes:\n  r:\n    base: debian:bookworm\n"
                                          "    packages: [redis-server]\n    services:\n"
                                          "      redis: {command: redis-server --port 0, startsecs: 0}\n")
            try:
                res["devbox"].append(C.timed([C.DEVBOX, "up", "--file", str(d / "Devboxfile")], env=env,
                                             timeout=1200))
            finally:
                C.devbox_cleanup(env, [d / "Devboxfile"])

    for i in range(a.cold_runs):
        for f in ((run_mmdebstrap, run_devbox) if i % 2 == 0 else (run_devbox, run_mmdebstrap)):
            f()
        print(f"cold round {i + 1}: mmdebstrap {res['mmdebstrap'][-1]:.2f} s, devbox {res['devbox'][-1]:.2f} s",
              file=sys.stderr, flush=True)
    cmd = " ".join(argv[:-2] + ["TMPFS/rootfs.tar", argv[-1]])
    out.append(f"\n(c) cold first up (load average after {C.loadavg()}); alternating, order flipped each round\n")
    out.append("| case | median s | min..max | N |\n|---|---:|---:|---:|")
    out.append(f"| `{cmd}` (TMPDIR on tmpfs) | {C.fmt_s(res['mmdebstrap'])} |")
    out.append(f"| `devbox up`, 1 box debian:bookworm + packages [redis-server] -> RUNNING, empty state root "
               f"on tmpfs, no bootstrap cache | {C.fmt_s(res['devbox'])} |")
    out.append("\nper round (mmdebstrap, devbox, ratio): " + ", ".join(
        f"({m:.2f}, {d:.2f}, {d / m:.2f}x)" for m, d in zip(res["mmdebstrap"], res["devbox"])))
    out.append(f"\ndevbox / mmdebstrap = **{C.ratio(res['devbox'], res['mmdebstrap'])}** (target ≤ 1.1x)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--cold-runs", type=int, default=2)
    ap.add_argument("--cold-only", action="store_true", help="only (c): no warm runs, no podman")
    ap.add_argument("--profile", action="store_true", help="cProfile one warm and one no-change up")
    a = ap.parse_args()
    out = [C.header("up: 3-box project (sleep infinity under supervisord in each)")]
    if not a.cold_only:
        warm(a, out)
    if a.cold or a.cold_only:
        cold(a, out)
    print("\n".join(out))


if __name__ == "__main__":
    main()
