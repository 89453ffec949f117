"""Project verbs: init, up, status, shell, restart, halt, destroy, reload, provision (logs and exec of
boxes are dispatched from cli/container.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

from devbox import errors
from devbox.cli.up import _summary
from devbox.cli.util import require_root

FILE_OPT = typer.Option(None, "--file", envvar="DEVBOX_FILE", help="Devboxfile to use (default: ./Devboxfile or a parent's).")


def _project(file: Path | None) -> Any:
    from devbox import orchestrator

    return orchestrator.load(file)


def init_cmd(
    template: str = typer.Option("blank", "--template", help="tomcat, python, node or blank."),
    name: str = typer.Option(None, "--name", help="Project name (default: the folder's name)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing Devboxfile."),
) -> None:
    """Write a commented Devboxfile into the current folder."""
    from devbox import devboxfile, fsutil

    target = Path.cwd() / "Devboxfile"
    if target.exists() and not force:
        raise errors.AlreadyExists(f"{target} already exists", hint="use --force to overwrite it")
    text = devboxfile.render_template(template, name or devboxfile.default_project_name(Path.cwd().name))
    fsutil.atomic_write(target, text)
    print(f"wrote {target} (template {template}); next: devbox up", file=sys.stderr)


def up_cmd(
    boxes: list[str] = typer.Argument(None, help="Boxes to bring up (default: all)."),
    build: bool = typer.Option(False, "--build", help="Rebuild images without the step cache."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be done, do nothing."),
    watch: bool = typer.Option(False, "--watch", help="Keep watching files and apply the watch rules."),
    frozen: bool = typer.Option(
        False, "--frozen", envvar="DEVBOX_FROZEN",
        help="Fail unless Devboxfile.lock pins every box's base as the Devboxfile says.",
    ),
    file: Path = FILE_OPT,
) -> None:
    """Create, build and start the project's boxes until every service is healthy."""
    from devbox.cli.up import run_up

    run_up(boxes or None, build, dry_run, watch, frozen, file)


def status_cmd(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    file: Path = FILE_OPT,
) -> None:
    """Boxes (state, image, IP, ports) and their services (state, pid, uptime, health)."""
    from devbox.cli.up import run_status

    run_status(as_json, file)


def shell_cmd(
    box: str = typer.Argument(None, help="Box (default: the first one)."),
    user: str = typer.Option(None, "-u", "--user", help="User (default: the box's user)."),
    file: Path = FILE_OPT,
) -> None:
    """An interactive shell in a box."""
    from devbox.runtime import container as ct

    require_root()
    project = _project(file)
    name = box or project.box_order()[0]
    c = _running_box(project, name)
    b = project.boxes[name]
    shell = "/bin/bash" if _exists_in(c, "/bin/bash") else "/bin/sh"
    tty = os.isatty(0)
    from devbox.runtime import console

    stdio, relays = ((0, 1, 2), []) if tty else console.plan_stdio(True, False)
    st = ct.exec_in(c, [shell, "-l"] if tty else [shell], user=user or b.user, cwd=b.workdir, tty=tty,
                    interactive=True, stdio=stdio, relays=relays)  # fmt: skip
    raise typer.Exit(ct.wait_exec(st))


def _exists_in(c: Any, path: str) -> bool:
    from devbox.runtime import container as ct

    code, _ = ct.run_in(c, ["/bin/sh", "-c", f"test -x {path}"], timeout=10)
    return code == 0


def _running_box(project: Any, name: str) -> Any:
    from devbox import orchestrator
    from devbox.runtime import container as ct

    orchestrator._selected(project, [name])
    c = orchestrator.box_container(project, name)
    if c is None or c.refresh() != ct.RUNNING:
        raise errors.IncorrectStatus(f"box {name} is not running", hint="start it with `devbox up`")
    return c


def _open_log(path: Path) -> Any:
    """Open a log for reading. Service logs live in a folder the box can write: never follow a
    symlink the box put there (services.client.open_box_file)."""
    from devbox.services.client import open_box_file

    if path.name == "log":  # the container's own log: host-side, not visible in the box
        try:
            return open(path, "rb")
        except FileNotFoundError:
            return None
    try:
        return os.fdopen(open_box_file(path.parent, path.name), "rb")
    except errors.ServiceError:
        return None


def _check_stamped(c: Any, name: str) -> None:
    """--since reads the .ts.log files of the box's `_devbox_logs` listener: refuse boxes without it."""
    from devbox import orchestrator
    from devbox.services.client import open_box_file
    from devbox.services.config import LISTENER

    try:
        with os.fdopen(open_box_file(orchestrator.run_dir(c), "supervisord.conf"), "rb") as f:
            stamped = f"[eventlistener:{LISTENER}]".encode() in f.read()
    except errors.ServiceError:
        stamped = False
    if not stamped:
        raise errors.ConfigError(
            f"box {name} keeps no timestamped logs (it was set up before `devbox logs --since` existed)",
            hint=f"run `devbox up` to add them (older lines stay without times), or recreate the box with `devbox provision {name}`",
        )


def box_logs(target: str | None, *, follow: bool, tail: int, since: str | None, file: Path | None = None) -> None:
    """Print service logs of one service, one box, or every box; -f follows all of them."""
    import time

    from devbox import orchestrator

    since_t = None
    if since is not None:
        from devbox.services import logs

        since_t = logs.parse_since(since)
    project = _project(file)
    box_name, _, service = (target or "").partition("/")
    names = [box_name] if box_name else project.box_order()
    sources: list[tuple[str, Path]] = []
    ts_sources: list[tuple[str, Path, str]] = []
    for name in names:
        orchestrator._selected(project, [name])
        c = orchestrator.box_container(project, name)
        if c is None:
            continue
        box = project.boxes[name]
        if service and service not in box.services:
            raise errors.ConfigError(f"box {name} has no service {service!r}",
                                     hint=f"services: {', '.join(box.services)}")  # fmt: skip
        if since_t is not None:
            _check_stamped(c, name)
            svcs = [service] if service else list(box.services)
            ts_sources += [(f"{name}/{svc}", orchestrator.log_dir(c), svc) for svc in svcs]
            continue
        if not service:
            sources.append((f"{name}", Path(c.log_path)))
        for svc in [service] if service else list(box.services):
            for stream in ("out", "err"):
                sources.append((f"{name}/{svc}", orchestrator.log_dir(c) / f"{svc}.{stream}.log"))
    if since_t is not None:
        from devbox.services import logs

        logs.print_since(sys.stdout.buffer, ts_sources, since=since_t, tail=tail, follow=follow,
                         prefix=len(ts_sources) > 1)  # fmt: skip
        return
    prefix = len(sources) > 2
    out = sys.stdout.buffer
    files: dict[str, Any] = {}
    for label, path in sources:
        f = _open_log(path)
        if f is None:
            continue
        files[os.fspath(path)] = (label, f)
        data = f.read()
        lines = data.splitlines(keepends=True)
        if tail >= 0:
            lines = lines[-tail:] if tail else []
        for line in lines:
            out.write((f"{label} | ".encode() if prefix else b"") + line)
    out.flush()
    while follow:
        for label, path in sources:
            if os.fspath(path) not in files and (f := _open_log(path)) is not None:
                files[os.fspath(path)] = (label, f)
        wrote = False
        for label, f in files.values():
            chunk = f.read()
            if chunk:
                wrote = True
                for line in chunk.splitlines(keepends=True):
                    out.write((f"{label} | ".encode() if prefix else b"") + line)
        out.flush()
        if not wrote:
            time.sleep(0.1)
    for _label, f in files.values():
        f.close()


def restart_cmd(target: str = typer.Argument(..., help="BOX or BOX/SERVICE."), file: Path = FILE_OPT) -> None:
    """Restart one service or one box."""
    from devbox import orchestrator

    require_root()
    orchestrator.restart(_project(file), target)
    print(target)


def halt_cmd(boxes: list[str] = typer.Argument(None, help="Boxes (default: all)."), file: Path = FILE_OPT) -> None:
    """Stop boxes; their writable layer is kept for the next `up`."""
    from devbox import orchestrator

    require_root()
    for b in orchestrator.halt(_project(file), boxes or None):
        print(f"halted {b}")


def destroy_cmd(
    force: bool = typer.Option(False, "-f", "--force", help="Do not ask."),
    file: Path = FILE_OPT,
) -> None:
    """Remove the project's boxes and network (images stay)."""
    from devbox import orchestrator

    require_root()
    project = _project(file)
    if not force and sys.stdin.isatty():
        if not typer.confirm(f"destroy every box of project {project.name}, with their writable layers?"):
            raise typer.Exit(1)
    for b in orchestrator.destroy(project):
        print(f"destroyed {b}")


def reload_cmd(file: Path = FILE_OPT) -> None:
    """Re-read the Devboxfile and converge (same as `up`)."""
    from devbox import orchestrator

    require_root()
    _summary(orchestrator.up(_project(file)))


def provision_cmd(boxes: list[str] = typer.Argument(None, help="Boxes (default: all)."), file: Path = FILE_OPT) -> None:
    """Rerun the build steps without cache and recreate the boxes."""
    from devbox import orchestrator

    require_root()
    _summary(orchestrator.provision(_project(file), boxes or None))


def register(app: typer.Typer) -> None:
    app.command("init")(init_cmd)
    app.command("up")(up_cmd)
    app.command("status")(status_cmd)
    app.command("shell")(shell_cmd)
    app.command("restart")(restart_cmd)
    app.command("halt")(halt_cmd)
    app.command("destroy")(destroy_cmd)
    app.command("reload")(reload_cmd)
    app.command("provision")(provision_cmd)
