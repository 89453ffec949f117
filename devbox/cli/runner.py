"""`devbox run` and `devbox exec`, without typer.

`devbox run --rm IMG CMD` is the engine's hot path, and `exec` the one a developer types all day;
importing typer (with its click) costs about 100 ms, more than the rest of either command. So they
have their own small parser here, driven by tables that mirror the typer signatures in
cli/container.py option for option (tests/unit/test_runner_parse.py checks the two agree on every
option and on many command lines). Whatever this parser does not recognise (--help, an unknown
option, a missing value) is handed to typer unchanged, so errors and help text stay typer's.
"""

from __future__ import annotations

import os

from devbox import errors

TYPE_CHECKING = False  # typing costs ~4 ms to import; only type checkers need it here
if TYPE_CHECKING:
    from typing import Any

# option -> (parameter name, kind): "flag" takes no value, "str" one value, "list" a repeatable value
RUN_OPTIONS: dict[str, tuple[str, str]] = {
    "--name": ("name", "str"),
    "-d": ("detach", "flag"), "--detach": ("detach", "flag"),
    "--rm": ("rm", "flag"),
    "-i": ("interactive", "flag"), "--interactive": ("interactive", "flag"),
    "-t": ("tty", "flag"), "--tty": ("tty", "flag"),
    "-e": ("env", "list"), "--env": ("env", "list"),
    "-v": ("volume", "list"), "--volume": ("volume", "list"),
    "--tmpfs": ("tmpfs", "list"),
    "-w": ("workdir", "str"), "--workdir": ("workdir", "str"),
    "-u": ("user", "str"), "--user": ("user", "str"),
    "--hostname": ("hostname", "str"),
    "--network": ("network", "str"), "--net": ("network", "str"),
    "-p": ("publish", "list"), "--publish": ("publish", "list"),
    "-m": ("memory", "str"), "--memory": ("memory", "str"),
    "--cpus": ("cpus", "str"),
    "--pids": ("pids", "str"), "--pids-limit": ("pids", "str"),
    "--entrypoint": ("entrypoint", "str"),
    "--cap-add": ("cap_add", "list"),
    "--cap-drop": ("cap_drop", "list"),
}  # fmt: skip

RUN_DEFAULTS: dict[str, Any] = {
    "name": None, "detach": False, "rm": False, "interactive": False, "tty": False, "env": [], "volume": [],
    "tmpfs": [], "workdir": None, "user": None, "hostname": None, "network": "default", "publish": [],
    "memory": None, "cpus": None, "pids": None, "entrypoint": None, "cap_add": [], "cap_drop": [],
}  # fmt: skip


EXEC_OPTIONS: dict[str, tuple[str, str]] = {
    "-i": ("interactive", "flag"), "--interactive": ("interactive", "flag"),
    "-t": ("tty", "flag"), "--tty": ("tty", "flag"),
    "-e": ("env", "list"), "--env": ("env", "list"),
    "-u": ("user", "str"), "--user": ("user", "str"),
    "-w": ("workdir", "str"), "--workdir": ("workdir", "str"),
    "--file": ("file", "str"),
}  # fmt: skip

# `file` also comes from $DEVBOX_FILE (typer's envvar); exec_ reads the variable itself when it is None
EXEC_DEFAULTS: dict[str, Any] = {"interactive": False, "tty": False, "env": [], "user": None, "workdir": None,
                                 "file": None}  # fmt: skip


def parse_run(argv: list[str]) -> dict[str, Any] | None:
    """Parameters of `run` from the arguments after the verb, as typer would give them; None when
    typer must decide (help, unknown options, missing values, no image)."""
    parsed = _parse_options(argv, RUN_OPTIONS, RUN_DEFAULTS)
    if parsed is None:
        return None
    p, i = parsed
    if i >= len(argv):
        return None  # no image: typer's error
    p["image"] = argv[i]
    p["command"] = list(argv[i + 1 :]) or None
    return p


def parse_exec(argv: list[str]) -> dict[str, Any] | None:
    """Parameters of `exec` from the arguments after the verb, as typer would give them; None when
    typer must decide (as parse_run; also no container or no command)."""
    parsed = _parse_options(argv, EXEC_OPTIONS, EXEC_DEFAULTS)
    if parsed is None:
        return None
    p, i = parsed
    if i + 1 >= len(argv):
        return None  # no container or no command: typer's error
    p["container"] = argv[i]
    p["command"] = list(argv[i + 1 :])
    return p


def _parse_options(argv: list[str], options: dict[str, tuple[str, str]],
                   defaults: dict[str, Any]) -> tuple[dict[str, Any], int] | None:  # fmt: skip
    """The options before the first positional argument, as click parses them with interspersed
    arguments off: (parameters, index of the first positional), or None when typer must decide."""
    p: dict[str, Any] = {k: (list(v) if isinstance(v, list) else v) for k, v in defaults.items()}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if not a.startswith("-") or a == "-":
            break
        if a.startswith("--"):
            opt, eq, val = a.partition("=")
            spec = options.get(opt)
            if spec is None:
                return None
            dest, kind = spec
            if kind == "flag":
                if eq:
                    return None
                p[dest] = True
                i += 1
                continue
            if not eq:
                if i + 1 >= len(argv):
                    return None
                val = argv[i + 1]
                i += 1
            i += 1
        else:  # short options, possibly combined (-it) or with an attached value (-p8080:80)
            j = 1
            dest, kind, val = "", "flag", ""
            while j < len(a):
                spec = options.get("-" + a[j])
                if spec is None:
                    return None
                dest, kind = spec
                if kind == "flag":
                    p[dest] = True
                    j += 1
                    continue
                val = a[j + 1 :]
                if not val:
                    if i + 1 >= len(argv):
                        return None
                    val = argv[i + 1]
                    i += 1
                break
            i += 1
            if kind == "flag":
                continue
        if kind == "list":
            p[dest].append(val)
        else:
            p[dest] = val
    return p, i


def main(argv: list[str]) -> int | None:
    """Run `devbox [--debug] run|exec ...` without typer; None to let typer handle argv."""
    debug = False
    if argv[:1] == ["--debug"]:
        debug, argv = True, argv[1:]
    verbs = {"run": (parse_run, run), "exec": (parse_exec, exec_)}
    if not argv or argv[0] not in verbs:
        return None
    parse, fn = verbs[argv[0]]
    params = parse(argv[1:])
    if params is None:
        return None
    from devbox.cli import run_fast

    return run_fast(debug, fn, **params)


def exec_(container: str, command: list[str], *, interactive: bool, tty: bool, env: list[str], user: str | None,
          workdir: str | None, file: str | os.PathLike[str] | None) -> int:  # fmt: skip
    """Run a command in a running box or container; the exit code is the command's."""
    from devbox.cli.util import box_target, require_root
    from devbox.runtime import console
    from devbox.runtime import container as ct

    require_root()
    if file is not None:
        os.environ["DEVBOX_FILE"] = os.fspath(file)
    command = list(command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise errors.ConfigError("no command given", hint=f"devbox exec {container} -- CMD ARGS...")
    target = box_target(container)
    if target is not None:
        project, c, _service = target
        if c is None:
            raise errors.IncorrectStatus(f"box {container} is not created", hint="start it with `devbox up`")
        box = project.boxes[container.partition("/")[0]]
        user = user if user is not None else box.user
        workdir = workdir or box.workdir
    else:
        c = ct.find(container)
    if tty:
        stdio, relays = (0, 1, 2), []
    else:
        stdio, relays = console.plan_stdio(interactive, False)
    try:
        st = ct.exec_in(c, command, env=parse_env(env), user=user, cwd=workdir, tty=tty,
                        interactive=interactive, stdio=stdio, relays=relays)  # fmt: skip
    finally:
        for fd in stdio:
            if fd > 2:
                os.close(fd)
    return ct.wait_exec(st)


def run(image: str, command: list[str] | None, *, name: str | None, detach: bool, rm: bool, interactive: bool,
        tty: bool, env: list[str], volume: list[str], tmpfs: list[str], workdir: str | None, user: str | None,
        hostname: str | None, network: str, publish: list[str], memory: str | None, cpus: str | None,
        pids: str | None, entrypoint: str | None, cap_add: list[str], cap_drop: list[str]) -> int:  # fmt: skip
    """Run a command in a new container; the exit code is the container's (0 with -d)."""
    from devbox.cli.util import require_root
    from devbox.runtime import console
    from devbox.runtime import container as ct

    require_root()
    if detach and (tty or interactive):
        raise errors.ConfigError("-d cannot be combined with -i/-t", hint="start detached, then `devbox exec -it NAME sh`")
    if detach and rm:
        raise errors.ConfigError("--rm cannot be combined with -d", hint="remove it later with `devbox rm -f NAME`")
    stdio: tuple[int, int, int] = (0, 1, 2)
    relays: list[tuple[int, int]] = []
    pre = None
    if not detach:
        if not tty:
            stdio, relays = console.plan_stdio(interactive, tty)
        # A foreground run forks its PID 1 first: joining the cgroup (10-30 ms in the kernel) then
        # overlaps the image lookup and the state files (container.prestart).
        pre = ct.prestart(ct.new_id(), network, stdio)
    try:
        ct.reconcile()
        fields = build_spec(image, command or [], name=name, env=env, volumes=volume, tmpfs=tmpfs, workdir=workdir,
                            user=user, hostname=hostname, network=network, ports=publish, memory=memory, cpus=cpus,
                            pids=pids, entrypoint=entrypoint, tty=tty, interactive=interactive, cap_add=cap_add,
                            cap_drop=cap_drop, auto_remove=rm)  # fmt: skip
        if pre is not None:
            fields["id"] = pre.id
        c = ct.create(fields)
    except BaseException:
        if pre is not None:
            pre.abort()
        raise
    if detach:
        try:
            ct.start(c)
        except BaseException:
            ct.remove(c, force=True)
            raise
        print(c.id)
        return 0
    try:
        with console.SignalForwarder() as fwd:  # before start: no signal is lost while it starts
            try:
                st = ct.start(c, foreground=True, stdio=stdio, relays=relays, prestarted=pre)
            finally:
                for fd in stdio:
                    if fd > 2:
                        os.close(fd)
            assert st is not None
            code = ct.wait_foreground(st, fwd, release=rm)
    except BaseException:
        ct.remove(c, force=True)
        raise
    if rm:
        ct.remove(c, force=True)
    return code


def parse_env(items: list[str]) -> list[str]:
    out = []
    for e in items:
        if "=" in e:
            out.append(e)
        elif e in os.environ:
            out.append(f"{e}={os.environ[e]}")
        else:
            raise errors.ConfigError(f"invalid -e {e!r}: expected KEY=VALUE", hint="or name a variable set in your shell")
    return out


def parse_volume(v: str) -> Any:
    from devbox.runtime.spec import MountSpec

    parts = v.split(":")
    ro = False
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        ro = parts[2] == "ro"
        parts = parts[:2]
    if len(parts) != 2 or not parts[0] or not parts[1].startswith("/"):
        raise errors.ConfigError(f"invalid -v {v!r}: expected HOST_PATH:CONTAINER_PATH[:ro]",
                                 hint="the container path must be absolute, e.g. -v ./src:/src")  # fmt: skip
    src = os.path.realpath(os.path.expanduser(parts[0]))
    if not os.path.exists(src):
        raise errors.ConfigError(f"volume source {parts[0]!r} does not exist", hint=f"create it: mkdir -p {src}")
    return MountSpec(src, os.path.normpath(parts[1]), ro, "bind")


def build_spec(image_ref: str, command: list[str], *, name: str | None = None, env: list[str] = (),  # type: ignore[assignment]
               volumes: list[str] = (), tmpfs: list[str] = (), workdir: str | None = None,  # type: ignore[assignment]
               user: str | None = None, hostname: str | None = None, network: str = "default",
               ports: list[str] = (), memory: str | None = None, cpus: str | None = None,  # type: ignore[assignment]
               pids: str | None = None, entrypoint: str | None = None, tty: bool = False,
               interactive: bool = False, cap_add: list[str] = (), cap_drop: list[str] = (),  # type: ignore[assignment]
               auto_remove: bool = False, labels: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Turn command-line style options and the image config into ContainerSpec fields."""
    from devbox.runtime.image import ensure_image
    from devbox.runtime.image.store import ImageStore
    from devbox.runtime.resources import Resources, parse_cpus, parse_memory, parse_pids
    from devbox.runtime.spec import MountSpec

    res = Resources(
        memory=parse_memory(memory) if memory else None,
        cpus=parse_cpus(cpus) if cpus else None,
        cpu_shares=None,
        pids=parse_pids(pids) if pids else None,
    )
    if ports:
        from devbox.runtime.ports import parse_port

        for p in ports:
            parse_port(p)
        if network in ("none", "host"):
            raise errors.ConfigError(f"-p needs a bridge network, not --network {network}",
                                     hint="drop --network or use --network NAME")  # fmt: skip
    mounts = [parse_volume(v) for v in volumes]
    mounts += [MountSpec("", os.path.normpath(t), False, "tmpfs") for t in tmpfs]
    store = ImageStore()
    image = ensure_image(store, image_ref)
    cfg = image.config.get("config") or {}
    ep = [entrypoint] if entrypoint is not None else list(cfg.get("Entrypoint") or [])
    if entrypoint == "":
        ep = []
    args = ep + (list(command) if command else ([] if entrypoint is not None else list(cfg.get("Cmd") or [])))
    if not args:
        raise errors.ConfigError(f"no command given and image {image_ref} has no Cmd or Entrypoint",
                                 hint=f"add one: devbox run {image_ref} sh")  # fmt: skip
    return {
        "name": name,
        "image": image_ref,
        "image_digest": image.digest,
        "diff_ids": list(image.diff_ids),
        "args": args,
        "env": list(cfg.get("Env") or []) + parse_env(list(env)),
        "cwd": workdir or cfg.get("WorkingDir") or "/",
        "user": user if user is not None else (cfg.get("User") or None),
        "hostname": hostname or "",
        "tty": tty,
        "interactive": interactive,
        "mounts": mounts,
        "resources": res.to_dict(),
        "network": network,
        "ports": list(ports),
        "caps_add": list(cap_add),
        "caps_drop": list(cap_drop),
        "labels": labels or {},
        "auto_remove": auto_remove,
    }
