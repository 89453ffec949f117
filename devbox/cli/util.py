"""Helpers shared by CLI modules: root check, output of tables and JSON."""

from __future__ import annotations

import os
import sys

from devbox.errors import NotRootError

TYPE_CHECKING = False  # typing costs ~4 ms to import; only type checkers need it here
if TYPE_CHECKING:
    from typing import Any


def require_root() -> None:
    if os.geteuid() != 0:
        raise NotRootError("devbox needs root to create containers", hint="run it with sudo")


def box_target(name: str) -> Any | None:
    """If `name` (BOX or BOX/SERVICE) is a box of the Devboxfile here ($DEVBOX_FILE, else the nearest
    one up from the current folder), (project, container, service); else None. Nothing heavier than
    a file lookup when there is no Devboxfile (`exec`/`logs` of a plain container)."""
    from devbox import fsutil

    path = os.environ.get("DEVBOX_FILE") or fsutil.find_upwards(os.getcwd(), "Devboxfile")
    if not path:
        return None
    from pathlib import Path

    from devbox import orchestrator

    project = orchestrator.load(Path(path))
    box, _, service = name.partition("/")
    if box not in project.boxes:
        return None
    return project, orchestrator.box_container(project, box), service


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [headers] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def print_json(obj: Any) -> None:
    import json  # indented output for people (`--json` listings): not on the `devbox run` path

    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def human_size(n: float) -> str:
    """Bytes in decimal units, as image sizes are shown: 512B, 1.1MB, 92.0MB."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}GB"
