"""Engine verbs: run, start, ps, exec, logs, stop, kill, rm."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import typer

from devbox import errors
from devbox.cli.util import print_json, print_table, require_root

PASSTHROUGH = {"allow_interspersed_args": False, "ignore_unknown_options": True}


def run_cmd(
    image: str = typer.Argument(..., help="Image reference, e.g. debian:bookworm or busybox:test."),
    command: list[str] = typer.Argument(None, help="Command and arguments (default: the image's)."),
    name: str = typer.Option(None, "--name", help="Container name."),
    detach: bool = typer.Option(False, "-d", "--detach", help="Run in the background; output goes to `devbox logs`."),
    rm: bool = typer.Option(False, "--rm", help="Remove the container when it exits."),
    interactive: bool = typer.Option(False, "-i", "--interactive", help="Keep stdin open."),
    tty: bool = typer.Option(False, "-t", "--tty", help="Give the container its own terminal."),
    env: list[str] = typer.Option([], "-e", "--env", help="KEY=VALUE (repeatable)."),
    volume: list[str] = typer.Option([], "-v", "--volume", help="HOST:CONTAINER[:ro] bind mount (repeatable)."),
    tmpfs: list[str] = typer.Option([], "--tmpfs", help="Mount a tmpfs at this path (repeatable)."),
    workdir: str = typer.Option(None, "-w", "--workdir", help="Working directory inside the container."),
    user: str = typer.Option(None, "-u", "--user", help="user, uid, user:group or uid:gid from the image."),
    hostname: str = typer.Option(None, "--hostname", help="Hostname (default: the short id)."),
    network: str = typer.Option("default", "--network", "--net", help="NAME, none or host."),
    publish: list[str] = typer.Option([], "-p", "--publish", help="[IP:]HOST:CONTAINER[/udp] (repeatable)."),
    memory: str = typer.Option(None, "-m", "--memory", help="Memory limit, e.g. 256m."),
    cpus: str = typer.Option(None, "--cpus", help="CPU limit, e.g. 0.5."),
    pids: str = typer.Option(None, "--pids", "--pids-limit", help="Maximum number of processes."),
    entrypoint: str = typer.Option(None, "--entrypoint", help="Override the image's entrypoint."),
    cap_add: list[str] = typer.Option([], "--cap-add", help="Add a capability (repeatable)."),
    cap_drop: list[str] = typer.Option([], "--cap-drop", help="Drop a capability (repeatable)."),
) -> None:
    """Run a command in a new container."""
    from devbox.cli.runner import run

    code = run(image, command, name=name, detach=detach, rm=rm, interactive=interactive, tty=tty, env=env,
               volume=volume, tmpfs=tmpfs, workdir=workdir, user=user, hostname=hostname, network=network,
               publish=publish, memory=memory, cpus=cpus, pids=pids, entrypoint=entrypoint, cap_add=cap_add,
               cap_drop=cap_drop)  # fmt: skip
    raise typer.Exit(code)


def start_cmd(names: list[str] = typer.Argument(..., help="Containers to start.")) -> None:
    """Start stopped containers (in the background)."""
    from devbox.runtime import container as ct

    require_root()
    ct.reconcile()
    for n in names:
        ct.start(ct.find(n))
        print(n)


def _age(t: float | None) -> str:
    if not t:
        return ""
    s = max(0, int(time.time() - t))
    for unit, n in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= n:
            k = s // n
            return f"{k} {unit}{'s' if k > 1 else ''}"
    return f"{s} seconds"


def _status_text(c: Any) -> str:
    st = c.refresh()
    if st == "running":
        return f"Up {_age(c.state.get('started_at'))}"
    if st == "stopped":
        code = c.state.get("exit_code")
        return f"Exited ({'?' if code is None else code}) {_age(c.state.get('finished_at'))} ago"
    return st.capitalize()


def ps_cmd(
    all_: bool = typer.Option(False, "-a", "--all", help="Also show stopped containers."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only ids."),
) -> None:
    """List containers."""
    from devbox.runtime import container as ct

    require_root()
    ct.reconcile()
    cs = [c for c in ct.list_containers() if all_ or c.refresh() == "running"]
    if quiet:
        for c in cs:
            print(c.id[:12])
        return
    if as_json:
        print_json([{"id": c.id, "name": c.name, "image": c.spec.image, "command": c.spec.args,
                     "status": c.refresh(), "pid": c.pid if c.refresh() == "running" else None,
                     "exit_code": c.state.get("exit_code"), "created": c.state.get("created_at"),
                     "started": c.state.get("started_at"), "network": c.spec.network, "ip": c.state.get("ip"),
                     "ports": c.spec.ports, "labels": c.spec.labels} for c in cs])  # fmt: skip
        return
    rows = [[c.id[:12], c.name, c.spec.image, " ".join(c.spec.args)[:30], _status_text(c),
             ", ".join(c.spec.ports), c.state.get("ip") or ""] for c in cs]  # fmt: skip
    print_table(["ID", "NAME", "IMAGE", "COMMAND", "STATUS", "PORTS", "IP"], rows)


def exec_cmd(
    container: str = typer.Argument(..., help="Container name or id."),
    command: list[str] = typer.Argument(..., help="Command and arguments."),
    interactive: bool = typer.Option(False, "-i", "--interactive", help="Keep stdin open."),
    tty: bool = typer.Option(False, "-t", "--tty", help="Allocate a terminal."),
    env: list[str] = typer.Option([], "-e", "--env", help="KEY=VALUE (repeatable)."),
    user: str = typer.Option(None, "-u", "--user", help="User to run as."),
    workdir: str = typer.Option(None, "-w", "--workdir", help="Working directory."),
    file: Path = typer.Option(None, "--file", envvar="DEVBOX_FILE", help="Devboxfile, when CONTAINER is a box."),
) -> None:
    """Run a command in a running box or container."""
    from devbox.cli.runner import exec_  # the same code as `exec` without typer (cli/runner.py)

    raise typer.Exit(exec_(container, list(command), interactive=interactive, tty=tty, env=list(env), user=user,
                           workdir=workdir, file=file))  # fmt: skip


def logs_cmd(
    container: str = typer.Argument(None, help="BOX, BOX/SERVICE, or a container name or id (default: every box)."),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing new output until it stops."),
    tail: int = typer.Option(-1, "-n", "--tail", help="Only the last N lines (of each log)."),
    since: str = typer.Option(None, "--since", "-t", help="Only lines since a DURATION ago (30s, 10m, 2h, 1d, 1h30m) or an ISO 8601 time (boxes only)."),
    file: Path = typer.Option(None, "--file", envvar="DEVBOX_FILE", help="Devboxfile of the boxes."),
) -> None:
    """Print a box's service logs, or a detached container's output."""
    from devbox.cli.project import box_logs
    from devbox.cli.util import box_target
    from devbox.runtime import container as ct

    require_root()
    if file is not None:
        os.environ["DEVBOX_FILE"] = os.fspath(file)
    if container is None:
        box_logs(None, follow=follow, tail=tail, since=since)
        return
    if box_target(container) is not None:
        box_logs(container, follow=follow, tail=tail, since=since)
        return
    c = ct.find(container)
    if since is not None:
        raise errors.ConfigError(f"--since works for box services only: the output of container {c.name} carries no timestamps",
                                 hint="use -n/--tail to limit the output")  # fmt: skip
    print_log(c.log_path, follow=follow, tail=tail, alive=lambda: c.refresh() == "running")


def print_log(path: Path, *, follow: bool, tail: int, alive: Any) -> None:
    out = sys.stdout.buffer
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        if not follow:
            return
        f = None
    with f if f else open(os.devnull, "rb") as fh:
        data = fh.read()
        if tail >= 0:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-tail:]) if tail else b""
        out.write(data)
        out.flush()
        while follow:
            chunk = fh.read()
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if not alive():
                out.write(fh.read())
                out.flush()
                return
            time.sleep(0.1)


def stop_cmd(
    names: list[str] = typer.Argument(..., help="Containers to stop."),
    time_: float = typer.Option(None, "-t", "--time", help="Seconds to wait before SIGKILL (default 10)."),
) -> None:
    """Stop containers: SIGTERM, then SIGKILL to every process after the timeout."""
    from devbox.runtime import container as ct

    require_root()
    for n in names:
        ct.stop(ct.find(n), timeout=time_)
        print(n)


def kill_cmd(
    names: list[str] = typer.Argument(..., help="Containers to signal."),
    signal_: str = typer.Option("KILL", "-s", "--signal", help="Signal name or number."),
) -> None:
    """Send a signal to containers (KILL reaches every process of the container)."""
    from devbox.runtime import container as ct

    require_root()
    for n in names:
        c = ct.find(n)
        ct.kill(c, signal_)
        if signal_.upper().lstrip("SIG") in ("KILL", "9"):
            ct.stop(c, timeout=5)
        print(n)


def rm_cmd(
    names: list[str] = typer.Argument(None, help="Containers to remove."),
    force: bool = typer.Option(False, "-f", "--force", help="Kill running containers first."),
    all_: bool = typer.Option(False, "--all", help="Remove every container."),
) -> None:
    """Remove containers (and their writable layer)."""
    from devbox.runtime import container as ct

    require_root()
    ct.reconcile()
    targets = ct.list_containers() if all_ else [ct.find(n) for n in names or []]
    if not targets and not all_:
        raise errors.ConfigError("name at least one container", hint="or use --all")
    for c in targets:
        ct.remove(c, force=force)
        if not all_:
            print(c.name)


def register(app: typer.Typer) -> None:
    app.command("run", context_settings=PASSTHROUGH)(run_cmd)
    app.command("start")(start_cmd)
    app.command("ps")(ps_cmd)
    app.command("exec", context_settings=PASSTHROUGH)(exec_cmd)
    app.command("logs")(logs_cmd)
    app.command("stop")(stop_cmd)
    app.command("kill")(kill_cmd)
    app.command("rm")(rm_cmd)
