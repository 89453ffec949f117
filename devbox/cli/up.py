"""`devbox up` and `devbox status` without typer: their bodies, and a fast path for the command line.

Importing typer and click costs ~100 ms, a third of a no-change `up`. `devbox.cli.main` first asks
`parse` here; when argv is `[--debug] up|status` with only the simple options below, the verb runs
directly. Anything else (--help, --version, --watch, an unknown option, `--`, DEVBOX_FROZEN in the
environment) returns None and typer parses as before, so help and usage errors are typer's own.
tests/unit/test_cli_fast.py checks this parse against typer's for many argvs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from devbox.cli.util import print_json, print_table, require_root

# option -> (keyword, takes a value); flags are True when given
_OPTS = {
    "up": {"--build": ("build", False), "--dry-run": ("dry_run", False), "--frozen": ("frozen", False),
           "--file": ("file", True)},
    "status": {"--json": ("as_json", False), "--file": ("file", True)},
}  # fmt: skip
_DEFAULTS = {
    "up": {"boxes": None, "build": False, "dry_run": False, "watch": False, "frozen": False, "file": None},
    "status": {"as_json": False, "file": None},
}


def parse(argv: list[str]) -> tuple[str, bool, dict[str, Any]] | None:
    """(verb, debug, keyword arguments of run_up/run_status), or None to leave argv to typer."""
    debug = False
    i = 0
    while i < len(argv) and argv[i] == "--debug":
        debug = True
        i += 1
    if i >= len(argv) or argv[i] not in _OPTS:
        return None
    verb = argv[i]
    if verb == "up" and "DEVBOX_FROZEN" in os.environ:  # typer's bool conversion of the variable
        return None
    opts = _OPTS[verb]
    kw: dict[str, Any] = dict(_DEFAULTS[verb])
    args: list[str] = []
    rest = argv[i + 1 :]
    j = 0
    while j < len(rest):
        a = rest[j]
        j += 1
        if a.startswith("-") and a != "-":
            name, eq, value = a.partition("=")
            spec = opts.get(name)
            if spec is None:
                return None  # --help, --watch, unknown options, `--`, short options
            key, takes_value = spec
            if takes_value:
                if not eq:
                    if j >= len(rest):
                        return None  # "requires an argument": typer says so
                    value = rest[j]
                    j += 1
                if value == "":
                    return None
                kw[key] = Path(value)
            else:
                if eq:
                    return None  # "--build=x": typer's error
                kw[key] = True
        else:
            args.append(a)
    if verb == "status":
        if args:
            return None  # "Got unexpected extra argument"
    else:
        kw["boxes"] = args or None
    return verb, debug, kw


def main(argv: list[str]) -> int | None:
    """Run `up`/`status` when parse accepts argv; None when typer has to. Errors as devbox.cli.main."""
    p = parse(argv)
    if p is None:
        return None
    verb, debug, kw = p
    from devbox.cli import run_fast

    return run_fast(debug, run_up if verb == "up" else run_status, **kw)


# ------------------------------------------------------------------------------------------ bodies


def _project(file: Path | None) -> Any:
    from devbox import orchestrator

    return orchestrator.load(file)


def _summary(result: Any) -> None:
    rows = []
    urls = []
    for br in result.boxes:
        c = br.container
        for name, s in (br.report.services.items() if br.report else []):
            rows.append([br.box, name, s.state, s.pid or "", "healthy" if s.healthy else s.message])
        for p in c.spec.ports:
            host = p.rsplit(":", 2)
            hip = host[0] if len(host) == 3 else "127.0.0.1"
            hport = host[-2]
            shown = "localhost" if hip in ("127.0.0.1", "0.0.0.0") else hip
            urls.append(f"{br.box}: {shown}:{hport} -> {br.box}:{host[-1]}")
    print_table(["BOX", "SERVICE", "STATE", "PID", "HEALTH"], rows)
    if urls:
        print("\nports:")
        for u in urls:
            print("  " + u)
    print(f"\n{len(result.boxes)} box(es) up in {result.elapsed:.2f}s", file=sys.stderr)


def run_up(boxes: list[str] | None, build: bool, dry_run: bool, watch: bool, frozen: bool, file: Path | None) -> None:
    from devbox import orchestrator

    require_root()
    project = _project(file)
    if frozen:
        from devbox import lockfile

        lockfile.check_frozen(project)
    if dry_run:
        for a in orchestrator.plan(project, boxes or None, build=build):
            print(a.describe())
        return
    from devbox.runtime import container as ct

    ct.reconcile()
    result = orchestrator.up(project, boxes or None, build=build, frozen=frozen)
    _summary(result)
    if watch:
        from devbox import watch as w

        w.watch(project.file, boxes or None)


def run_status(as_json: bool, file: Path | None) -> None:
    from devbox import orchestrator

    require_root()
    project = _project(file)
    st = orchestrator.status(project)
    if as_json:
        print_json({"project": project.name, "boxes": [
            {"box": s.box, "state": s.state, "image": s.image, "ip": s.ip, "ports": s.ports,
             "container": s.container.id if s.container else None, "services": s.services} for s in st]})  # fmt: skip
        return
    print_table(["BOX", "STATE", "IMAGE", "IP", "PORTS"],
                [[s.box, s.state, s.image, s.ip or "", ", ".join(s.ports)] for s in st])  # fmt: skip
    rows = [[s.box, sv["name"], sv["state"], sv["pid"] or "", _uptime(sv["uptime"]), sv["health"]]
            for s in st for sv in s.services]  # fmt: skip
    if rows:
        print()
        print_table(["BOX", "SERVICE", "STATE", "PID", "UPTIME", "HEALTH"], rows)


def _uptime(s: int) -> str:
    if not s:
        return ""
    h, rem = divmod(int(s), 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}"
