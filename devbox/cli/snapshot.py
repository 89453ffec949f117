"""`devbox commit`, `devbox snapshot save|restore|list|delete`, `devbox lock`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from devbox import errors
from devbox.cli.util import human_size as _human
from devbox.cli.util import print_json, print_table, require_root

FILE_OPT = typer.Option(
    None, "--file", envvar="DEVBOX_FILE", help="Devboxfile to use (default: ./Devboxfile or a parent's)."
)

snapshot_app = typer.Typer(
    no_args_is_help=True, help="Save and restore a box's state by name (Vagrant-style)."
)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _project(file: Path | None) -> Any:
    from devbox import orchestrator

    return orchestrator.load(file)


def _commit_target(name: str, file: Path | None) -> Any:
    """BOX of the Devboxfile (--file, or the one in this folder) first, then a container name or id."""
    from devbox import orchestrator
    from devbox.runtime import container as ct

    project = None
    if file is not None:
        project = _project(file)
    else:
        from devbox.cli.util import box_target

        t = box_target(name)
        project = t[0] if t else None
    if project is not None and name in project.boxes:
        c = orchestrator.box_container(project, name)
        if c is None:
            raise errors.IncorrectStatus(
                f"box {name} has no container yet", hint="create it with `devbox up`"
            )
        return c
    return ct.find(name)


def commit_cmd(
    target: str = typer.Argument(
        ..., metavar="BOX_OR_CONTAINER", help="A box of the Devboxfile, or a container."
    ),
    name: str = typer.Argument(
        None, metavar="[NAME[:TAG]]", help="Tag for the new image (default: <container>-commit:latest)."
    ),
    message: str = typer.Option(
        None, "-m", "--message", help="Commit message (the history entry's comment)."
    ),
    author: str = typer.Option(None, "-a", "--author", help="Author recorded in the image."),
    pause: bool = typer.Option(
        True, "--pause/--no-pause", help="Freeze a running container while its changes are read."
    ),
    file: Path = FILE_OPT,
) -> None:
    """Turn a box's or container's changes into a new image layer, and tag it."""
    from devbox.runtime.image.commit import commit, default_name
    from devbox.runtime.image.store import ImageStore

    require_root()
    c = _commit_target(target, file)
    img = commit(ImageStore(), c, name or default_name(c.name), message=message, author=author, pause=pause)
    print(f"{img.ref} {img.digest}")


@snapshot_app.command("save")
def save_cmd(
    box: str = typer.Argument(..., help="Box of the Devboxfile."),
    name: str = typer.Argument(..., help="Snapshot name, e.g. before-upgrade."),
    message: str = typer.Option(None, "-m", "--message", help="A note kept with the snapshot."),
    force: bool = typer.Option(False, "-f", "--force", help="Replace a snapshot of the same name."),
    file: Path = FILE_OPT,
) -> None:
    """Save the box's filesystem (outside its mounts) as snapshot NAME; a running box keeps running."""
    from devbox import snapshots

    require_root()
    img = snapshots.save(_project(file), box, name, message=message, force=force)
    print(f"saved snapshot {name} of box {box} ({img.short_id})")


@snapshot_app.command("restore")
def restore_cmd(
    box: str = typer.Argument(..., help="Box of the Devboxfile."),
    name: str = typer.Argument(..., help="Snapshot name."),
    file: Path = FILE_OPT,
) -> None:
    """Bring the box back to snapshot NAME: stop it, restore, start it and wait until it is healthy."""
    from devbox import snapshots

    require_root()
    res = snapshots.restore(_project(file), box, name, say=_say)
    print(f"restored box {box} to snapshot {name} in {res.elapsed:.2f}s")


@snapshot_app.command("list")
def list_cmd(
    box: str = typer.Argument(None, help="Box (default: every box)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    file: Path = FILE_OPT,
) -> None:
    """Snapshots of one box or of every box of the project."""
    from devbox import snapshots

    require_root()
    snaps = snapshots.list_snapshots(_project(file), box)
    if as_json:
        print_json([{"box": s.box, "name": s.name, "image": s.ref, "digest": s.digest, "created": s.created,
                     "size": s.size, "comment": s.comment} for s in snaps])  # fmt: skip
        return
    print_table(["BOX", "SNAPSHOT", "CREATED", "SIZE", "ID"],
                [[s.box, s.name, s.created or "", _human(s.size), s.digest.split(":")[1][:12]] for s in snaps])  # fmt: skip


@snapshot_app.command("delete")
def delete_cmd(
    box: str = typer.Argument(..., help="Box of the Devboxfile."),
    name: str = typer.Argument(..., help="Snapshot name."),
    file: Path = FILE_OPT,
) -> None:
    """Delete snapshot NAME of the box (`devbox image prune` frees the space)."""
    from devbox import snapshots

    require_root()
    snapshots.delete(_project(file), box, name)
    print(f"deleted snapshot {name} of box {box}")


def lock_cmd(file: Path = FILE_OPT) -> None:
    """Write Devboxfile.lock: the exact base image of every box (commit it with the Devboxfile)."""
    from devbox import lockfile

    require_root()
    project = _project(file)
    lock, path = lockfile.lock_project(project, _say)
    for name, b in lock.boxes.items():
        extra = f", {len(b.debian.packages)} packages pinned" if b.debian else ""
        extra += f", registry {b.registry_digest[:19]}" if b.registry_digest else ""
        _say(f"box {name}: {b.base} -> {b.digest[:19]}{extra}")
    print(path)


def register(app: typer.Typer) -> None:
    app.command("commit")(commit_cmd)
    app.add_typer(snapshot_app, name="snapshot")
    app.command("lock")(lock_cmd)
