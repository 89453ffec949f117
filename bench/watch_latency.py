#!/usr/bin/env python3
"""Benchmark: file save -> the target service RUNNING again, through `devbox watch`.

    sudo .venv/bin/python bench/watch_latency.py [--samples 15] [--tree 50000]

Method (one run, on a throwaway state root on tmpfs; debian:bookworm comes from the bootstrap cache,
DEVBOX_BOOTSTRAP_CACHE, default /var/cache/devbox-test):
1. `devbox up` a project with one box and two services; `app` is `python3 /srv/app/main.py` from the
   mounted project folder; its watch rule is `{path: ./app, include: ["*.py"], action: restart app}`.
2. own: the service's own restart time, without devbox watch: supervisord's restart over XML-RPC
   (stop, spawn, `startsecs`), measured from the host as `restart` then poll until RUNNING.
3. save: start `devbox watch` as a process; per sample, write app/main.py (new content, close), then
   poll supervisord (every 2 ms) until `app` is RUNNING with a new pid. That time minus the median own
   restart time is devbox watch's share: inotify, debounce (100 ms quiet), scheduling, the RPC calls.
Both are run with startsecs=1 (supervisord's default) and startsecs=0.
4. --tree N: a tree of N files (80% in src/, 20% in node_modules/, --per-dir files a folder) watched
   by devbox's watcher (the real InotifySource, fake actions) and by watchdog's recursive Observer:
   start-up time, number of
   inotify watches (from /proc/self/fdinfo), the process's RSS growth, and save -> action-started latency.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEVBOX = [sys.executable, "-m", "devbox"]

DEVBOXFILE = """\
name: {name}
boxes:
  web:
    base: debian:bookworm
    mounts: ["./app:/srv/app"]
    services:
      app: {{command: python3 /srv/app/main.py, startsecs: {startsecs}}}
      other: {{command: sleep infinity}}
    watch:
      - {{path: ./app, include: ["*.py"], action: restart app}}
"""
MAIN = "import time\n# {n}\nwhile True:\n    time.sleep(60)\n"


def run(*args: str, cwd: Path | None = None) -> str:
    r = subprocess.run([*DEVBOX, *args], capture_output=True, text=True, cwd=cwd)
    if r.returncode != 0:
        raise SystemExit(f"devbox {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def ms(xs: list[float]) -> str:
    xs = sorted(xs)
    return (
        f"median {statistics.median(xs) * 1000:7.1f} ms   min {xs[0] * 1000:7.1f}   "
        f"max {xs[-1] * 1000:7.1f}   (n={len(xs)})"
    )


def latency(root: Path, samples: int, startsecs: int) -> dict[str, Any]:
    from devbox import orchestrator

    proj = root / f"lat{startsecs}"
    (proj / "app").mkdir(parents=True)
    name = f"wbench{os.getpid() % 10000}s{startsecs}"
    f = proj / "Devboxfile"
    f.write_text(DEVBOXFILE.format(name=name, startsecs=startsecs))
    (proj / "app/main.py").write_text(MAIN.format(n=0))
    watcher = None
    try:
        run("up", "--file", str(f))
        project = orchestrator.load(f)
        c = orchestrator.box_container(project, "web")
        client = orchestrator.client_for(c)

        def wait_new(old: int, deadline: float) -> None:
            while True:
                i = client.info("app")
                if i.pid and i.pid != old and i.state == "RUNNING":
                    return
                if time.monotonic() > deadline:
                    raise SystemExit("timed out waiting for app to run again")
                time.sleep(0.002)

        own = []
        for _ in range(samples):
            old = client.info("app").pid
            time.sleep(0.3)  # as below: a restart right after a start can lose supervisord's SIGTERM
            t0 = time.monotonic()
            client.restart("app")
            wait_new(old, t0 + 60)
            own.append(time.monotonic() - t0)
        log = open(root / f"watch{startsecs}.log", "w+b")  # noqa: SIM115
        watcher = subprocess.Popen(
            [*DEVBOX, "watch", "--file", str(f)], stdout=log, stderr=subprocess.STDOUT, cwd=proj
        )
        deadline = time.monotonic() + 30
        while b"Ctrl-C to stop" not in Path(log.name).read_bytes():
            if time.monotonic() > deadline or watcher.poll() is not None:
                raise SystemExit("devbox watch did not start:\n" + Path(log.name).read_text())
            time.sleep(0.01)
        save = []
        for n in range(1, samples + 1):
            old = client.info("app").pid
            time.sleep(0.3)  # let the previous run settle (not part of a sample)
            t0 = time.monotonic()
            with open(proj / "app/main.py", "w") as fh:
                fh.write(MAIN.format(n=n))
            wait_new(old, t0 + 60)
            save.append(time.monotonic() - t0)
        return {"own": own, "save": save, "log": Path(log.name).read_text()}
    finally:
        if watcher is not None and watcher.poll() is None:
            watcher.send_signal(signal.SIGINT)
            watcher.wait(timeout=30)
        subprocess.run([*DEVBOX, "destroy", "-f", "--file", str(f)], capture_output=True)


# ------------------------------------------------------------------------------------------ big tree


def inotify_watches(pid: int | str = "self") -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            n += sum(1 for line in open(f"/proc/{pid}/fdinfo/{fd}") if line.startswith("inotify wd:"))
        except OSError:
            pass
    return n


def rss_kb() -> int:
    m = re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text())
    return int(m.group(1)) if m else 0


def make_tree(root: Path, n: int, per_dir: int) -> None:
    for i in range(n):
        top = "node_modules" if i >= n * 0.8 else "src"
        d = root / top / f"d{i // per_dir // 20}" / f"e{i // per_dir}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.py").write_bytes(b"x\n")


def tree(root: Path, n: int, per_dir: int) -> None:
    from devbox import watch as w

    proj = root / "tree"
    proj.mkdir()
    t0 = time.monotonic()
    make_tree(proj, n, per_dir)
    print(
        f"\n--tree {n}: made {n} files in {sum(1 for _ in proj.rglob('*') if _.is_dir())} folders "
        f"in {time.monotonic() - t0:.1f}s"
    )
    (proj / "Devboxfile").write_text(
        "name: tree\nboxes:\n  web:\n    base: debian:bookworm\n    services:\n"
        "      app: {command: sleep infinity}\n    watch:\n"
        "      - {path: ., include: ['*.py'], action: restart app}\n"
    )

    class Runner:
        def __init__(self) -> None:
            self.started: list[float] = []

        def run(self, job: Any, ctx: Any) -> str:
            self.started.append(time.monotonic())
            return ""

        def interrupt(self, sig: int = 2) -> None:
            pass

    gc.collect()
    rss0, w0 = rss_kb(), inotify_watches()
    runner = Runner()
    watcher = w.Watcher(proj / "Devboxfile", None, runner=runner, out=w.Reporter(io.StringIO()))
    t0 = time.monotonic()
    watcher.start()
    took = time.monotonic() - t0
    gc.collect()
    print(
        f"  devbox watcher : start {took * 1000:6.0f} ms, {inotify_watches() - w0:5d} inotify watches, "
        f"RSS +{(rss_kb() - rss0) / 1024:.1f} MiB"
    )
    lat = []
    try:
        for k in range(10):
            target = proj / "src" / f"d{k}" / f"e{k * 20}" / f"f{k * 20 * per_dir}.py"
            n0 = len(runner.started)
            t0 = time.monotonic()
            target.write_bytes(b"y\n")
            deadline = t0 + 10
            while len(runner.started) == n0 and time.monotonic() < deadline:
                watcher.step(0.01)
            lat.append(runner.started[-1] - t0)
            while not watcher.sched.idle():
                watcher.step(0.01)
    finally:
        watcher.source.stop()
    print(f"  save -> action started (includes the 100 ms debounce): {ms(lat)}")

    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    gc.collect()
    rss0, w0 = rss_kb(), inotify_watches()
    obs = Observer()
    t0 = time.monotonic()
    obs.schedule(FileSystemEventHandler(), str(proj), recursive=True)
    obs.start()
    took = time.monotonic() - t0
    gc.collect()
    print(
        f"  watchdog Observer(recursive): start {took * 1000:6.0f} ms, {inotify_watches() - w0:5d} inotify "
        f"watches, RSS +{(rss_kb() - rss0) / 1024:.1f} MiB"
    )
    obs.stop()
    obs.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=15)
    ap.add_argument("--tree", type=int, default=50000, help="files in the big-tree test (0: skip)")
    ap.add_argument("--per-dir", type=int, default=10, help="files per folder in the big tree")
    ap.add_argument("--startsecs", type=int, nargs="*", default=[1, 0])
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (devbox up needs it)")
    base = Path(tempfile.mkdtemp(prefix="dbx-wbench-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8g", "wbench", str(base)], check=True)
    os.environ["DEVBOX_ROOT"] = str(base / "state")
    os.environ.setdefault("DEVBOX_BOOTSTRAP_CACHE", "/var/cache/devbox-test")
    try:
        results = {}
        for s in a.startsecs:
            r = latency(base, a.samples, s)
            results[s] = r
            own = statistics.median(r["own"])
            print(f"\nstartsecs={s}")
            print(f"  own restart (XML-RPC restart -> RUNNING): {ms(r['own'])}")
            print(f"  save -> RUNNING with a new pid          : {ms(r['save'])}")
            print(f"  save -> RUNNING minus own restart       : {ms([x - own for x in r['save']])}")
        if a.tree:
            tree(base, a.tree, a.per_dir)
        print(
            "\n"
            + json.dumps(
                {
                    str(s): {k: [round(x, 4) for x in v] for k, v in r.items() if k != "log"}
                    for s, r in results.items()
                }
            )
        )
    finally:
        subprocess.run([*DEVBOX, "rm", "-f", "--all"], capture_output=True)
        subprocess.run(["umount", "-l", str(base)], check=False)
        os.rmdir(base)


if __name__ == "__main__":
    main()
