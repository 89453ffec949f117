"""`devbox watch [BOX...]`: apply the Devboxfile's watch rules when files change (see docs/watch.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from devbox.cli.util import require_root

FILE_OPT = typer.Option(
    None, "--file", envvar="DEVBOX_FILE", help="Devboxfile to use (default: ./Devboxfile or a parent's)."
)


def watch_cmd(
    boxes: list[str] = typer.Argument(None, help="Boxes whose rules apply (default: all)."),
    file: Path = FILE_OPT,
    debounce: int = typer.Option(
        100, "--debounce", min=0, help="Milliseconds without a change before an action runs."
    ),
    verbose: bool = typer.Option(
        False, "-v", "--verbose", help="Show the output of exec, sync and rebuild actions."
    ),
) -> None:
    """Watch the project's files and restart, signal, exec, sync or rebuild as the watch rules say.

    Edits to the Devboxfile reload the project. Ctrl-C stops watching; the boxes keep running."""
    from devbox import watch

    require_root()
    raise typer.Exit(watch.watch(file, boxes or None, quiet=debounce / 1000, verbose=verbose))


def register(app: typer.Typer) -> None:
    app.command("watch")(watch_cmd)
