"""`devbox up` and friends: converge a project's boxes to its Devboxfile.

Project state is derived, not stored: a box is the container named `<project>-<box>` carrying the
labels devbox.project / devbox.root / devbox.box, and the labels devbox.config (the box's config_hash)
and devbox.services (its services_hash) say what it was made from. The kernel says whether it runs.

Per box, `up` does the least that makes it match:
  image      build (each step a cached layer; unchanged steps are lookups)
  container  create when missing; recreate when its image or config hash changed
  services   rewrite supervisord.conf and apply it over XML-RPC when only services changed
  start      when stopped (a halted box keeps its writable layer)
and waits, in depends_on order, until every service is healthy.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devbox import errors, fsutil, model, paths
from devbox.runtime import container as ct

SOCK_IN_BOX = "/run/devbox/supervisor.sock"
CONF_IN_BOX = "/run/devbox/supervisord.conf"
LOGS_IN_BOX = "/var/log/devbox"
HEALTH_TIMEOUT = float(os.environ.get("DEVBOX_HEALTH_TIMEOUT", "120"))

Say = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ locating


def load(file: Path | None = None) -> model.Project:
    if file is None and os.environ.get("DEVBOX_FILE"):
        file = Path(os.environ["DEVBOX_FILE"])
    path = file if file is not None else _find_devboxfile()
    return _load_cached(Path(path).resolve())


def _find_devboxfile() -> Path:
    """devboxfile.find without importing devboxfile (yaml and the validators) when there is one."""
    found = fsutil.find_upwards(os.getcwd(), "Devboxfile")
    if found is not None:
        return Path(found)
    from devbox import devboxfile

    return devboxfile.find(Path.cwd())  # raises its error


# the modules whose code decides what devboxfile.load returns
_PARSER_FILES = ("__init__.py", "devboxfile.py", "model.py", "errors.py", "services/config.py", "runtime/resources.py")


def _load_cached(path: Path) -> model.Project:
    """devboxfile.load, memoised by the file's text: parsing imports yaml and validates everything
    (~30-50 ms); the cache is a pickle in the state root's cache/devboxfile/, keyed by the path, the
    text and the parser's own files, so any change to them parses again. Errors are never cached."""
    import pickle

    try:
        text = path.read_bytes()
    except OSError:
        text = None
    if text is None:
        from devbox import devboxfile

        return devboxfile.load(path)  # its own errors for missing or unreadable files
    h = hashlib.sha256(os.fsencode(path) + b"\0" + text)
    here = os.path.dirname(os.path.abspath(__file__))
    for f in _PARSER_FILES:  # a changed parser (an upgrade, a developer's edit) invalidates every entry
        try:
            st = os.stat(os.path.join(here, f))
            h.update(f"\0{f}:{st.st_mtime_ns}:{st.st_size}".encode())
        except OSError:
            h.update(f"\0{f}:-".encode())
    key = h.hexdigest()
    # one entry per Devboxfile path, holding (key, project)
    cache = Path(paths.cache_dir(), "devboxfile") / f"{hashlib.sha256(os.fsencode(path)).hexdigest()[:32]}.pickle"
    try:
        with open(cache, "rb") as fh:
            got_key, project = pickle.load(fh)
        if got_key == key and isinstance(project, model.Project):
            return project
    except Exception:  # missing, truncated, or from another version: parse again
        pass
    from devbox import devboxfile

    project = devboxfile.load(path)
    try:
        from devbox import fsutil

        cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fsutil.atomic_write(cache, pickle.dumps((key, project), protocol=pickle.HIGHEST_PROTOCOL), 0o600)
    except Exception:  # a read-only state root or an unpicklable project: no cache, same result
        pass
    return project


def container_name(project: model.Project, box: str) -> str:
    return f"{project.name}-{box}"


def network_name(project: model.Project) -> str:
    return project.name


def box_container(project: model.Project, box: str) -> ct.Container | None:
    try:
        c = ct.find(container_name(project, box))
    except errors.ContainerNotFound:
        return None
    if c.spec.labels.get("devbox.project") != project.name or c.spec.labels.get("devbox.box") != box:
        raise errors.AlreadyExists(
            f"container {c.name} exists but is not box {box} of project {project.name}",
            hint=f"remove it (`devbox rm -f {c.name}`) or rename the project (`name:` in the Devboxfile)",
        )
    return c


def project_containers(project: model.Project) -> list[ct.Container]:
    return [c for c in ct.list_containers() if c.spec.labels.get("devbox.project") == project.name
            and c.spec.labels.get("devbox.root") == os.fspath(project.root)]  # fmt: skip


def run_dir(c: ct.Container) -> Path:
    return Path(c.dir, "run")


def log_dir(c: ct.Container) -> Path:
    return Path(c.dir, "svlogs")


def client_for(c: ct.Container) -> Any:
    from devbox.services.client import Supervisor

    return Supervisor(os.fspath(run_dir(c) / "supervisor.sock"))


# ------------------------------------------------------------------------------------------ images


def _debian_suite(base: str) -> str | None:
    from devbox.runtime.image import reference

    r = reference.parse(base)
    if r.registry == reference.DOCKER_HUB and r.repository == "library/debian" and r.tag and not r.digest:
        from devbox.runtime.image import bootstrap

        return r.tag if bootstrap.is_bootstrappable(r.tag) else None
    return None


def _steps(box: model.Box) -> list[Any]:
    from devbox.runtime.image.build import Step

    out = []
    for s in box.build:
        out.append(Step(kind=str(s.kind), command=list(s.command), source=os.fspath(s.source) if s.source else None,
                        target=s.target, env=dict(s.env), user=s.user))  # fmt: skip
    return out


def box_image(project: model.Project, box: model.Box, *, no_cache: bool = False, say: Say = _stderr,
              only_cached: bool = False, frozen: bool = False) -> Any:  # fmt: skip
    """The box's image: base (+ packages) + build steps, each cached. With only_cached, None when
    something would have to be built."""
    from devbox.runtime.image import ensure_image
    from devbox.runtime.image.build import Step, build, lookup_chain
    from devbox.runtime.image.store import ImageStore

    store = ImageStore()
    suite = _debian_suite(box.base)
    steps = _steps(box)
    # Devboxfile.lock: a pinned base is used as is; otherwise what is resolved below is checked against it
    # (the lockfile module is only loaded when there is a lock or --frozen asks for one)
    lockfile: Any = None
    pinned = None
    if frozen or os.path.exists(os.fspath(project.file) + ".lock"):
        from devbox import lockfile

        pinned = lockfile.pinned_base(store, project, box, frozen=frozen, only_cached=only_cached, say=say)
    if suite is not None:
        # Debian bases: one mmdebstrap run with the packages included is the fastest way to them
        pk = sorted(set(box.packages))
        ref = f"debian:{suite}" if not pk else f"debian:{suite}-{hashlib.sha256(' '.join(pk).encode()).hexdigest()[:12]}"
        try:
            base = pinned or store.resolve(ref)
        except errors.ImageNotFound:
            if only_cached:
                return None
            from devbox.runtime.image import bootstrap

            say(f"box {box.name}: bootstrapping debian:{suite}" + (f" with {', '.join(pk)}" if pk else ""))
            base = bootstrap.bootstrap_debian(store, suite, ref=ref, packages=tuple(pk))
    else:
        if pinned is not None:
            base = pinned
        elif only_cached:
            try:
                base = store.resolve(box.base)
            except errors.ImageNotFound:
                return None
        else:
            base = ensure_image(store, box.base)
        if box.packages:
            pkgs = " ".join(box.packages)
            steps.insert(0, Step(kind="run", command=["/bin/sh", "-c",
                         "if command -v apt-get >/dev/null; then apt-get update -qq && apt-get install -y -qq "
                         f"--no-install-recommends {pkgs} && rm -rf /var/lib/apt/lists/*; "
                         f"elif command -v apk >/dev/null; then apk add --no-cache {pkgs}; "
                         "else echo 'devbox: the base image has neither apt-get nor apk' >&2; exit 1; fi"]))  # fmt: skip
    tag = f"{project.name}-{box.name}:latest"
    if only_cached:
        return lookup_chain(store, base, steps)
    if pinned is None and lockfile is not None:
        lockfile.check_base(store, project, box, base, frozen=frozen, say=say)
    img = build(store, base, steps, tag=tag, no_cache=no_cache, out=lambda s: say(f"box {box.name}: {s}"))
    _check_supervisord(store, img, box)
    return img


def _check_supervisord(store: Any, img: Any, box: model.Box) -> None:
    for d in reversed(store.layer_dirs(img)):
        p = os.path.join(d, "usr/bin/supervisord")
        if os.path.lexists(p):
            return
    raise errors.BuildError(
        f"box {box.name}: image {box.base} has no /usr/bin/supervisord, which runs every box's services",
        hint="use a debian:SUITE base, or add `supervisor` to the box's packages",
    )


# ------------------------------------------------------------------------------------------ containers


# A box's PID 1 is supervisord. Debian's /usr/bin/supervisord finds its entry point through
# importlib.metadata, and supervisor.options imports pkg_resources (together ~85 ms of CPU, more than
# half of supervisord's start-up, paid by every box an `up` starts) only to resolve
# `supervisor.rpcinterface:make_main_rpcinterface`. Boxes whose image has python3 and Debian's
# supervisor module run this file instead (written to the box's /run/devbox before each start): the
# same supervisord main() with a small pkg_resources stand-in that resolves "module:attr" and loads the
# real pkg_resources for anything else; if supervisor cannot be imported it execs /usr/bin/supervisord.
# Boxes created before keep their argv.
PYTHON_IN_BOX = "/usr/bin/python3"
BOOT_IN_BOX = "/run/devbox/supervisord_boot.py"
SUPERVISOR_IN_BOX = "usr/lib/python3/dist-packages/supervisor/supervisord.py"
BOOT_PY = """\
# Written by devbox (devbox/orchestrator.py): supervisord's main() without importing pkg_resources.
import importlib
import os
import sys
import types


class EntryPoint:
    def __init__(self, spec):
        self.spec = spec

    @classmethod
    def parse(cls, src):
        return cls(src.split("=", 1)[1].strip())

    def resolve(self):
        mod, _, attrs = self.spec.partition(":")
        obj = importlib.import_module(mod.strip())
        for a in filter(None, attrs.strip().split(".")):
            obj = getattr(obj, a)
        return obj

    def load(self, require=True):
        return self.resolve()


def _real(name):
    sys.modules.pop("pkg_resources", None)
    import pkg_resources

    return getattr(pkg_resources, name)


stub = types.ModuleType("pkg_resources")
stub.EntryPoint = EntryPoint
stub.__getattr__ = _real
sys.argv[0] = "/usr/bin/supervisord"
sys.modules["pkg_resources"] = stub
try:
    from supervisor.supervisord import main
except ImportError:
    sys.modules.pop("pkg_resources", None)
    os.execv("/usr/bin/supervisord", sys.argv)
sys.exit(main())
"""


def _fast_boot(image: Any) -> bool:
    """True when the image has /usr/bin/python3 and Debian's supervisor module (see BOOT_PY)."""
    from devbox.runtime.image.store import ImageStore

    dirs = ImageStore().layer_dirs(image)
    return any(os.path.lexists(os.path.join(d, "usr/bin/python3")) for d in dirs) and any(
        os.path.lexists(os.path.join(d, SUPERVISOR_IN_BOX)) for d in dirs
    )


def _box_spec(project: model.Project, box: model.Box, image: Any) -> dict[str, Any]:
    from devbox.runtime.spec import MountSpec
    from devbox.services.config import supervisord_command

    cfg = image.config.get("config") or {}
    env = list(cfg.get("Env") or []) + [f"{k}={v}" for k, v in box.env.items()]
    r = box.resources
    return {
        "name": container_name(project, box.name),
        "image": f"{project.name}-{box.name}:latest",
        "image_digest": image.digest,
        "diff_ids": list(image.diff_ids),
        "args": [PYTHON_IN_BOX, BOOT_IN_BOX, *supervisord_command(CONF_IN_BOX)[1:]] if _fast_boot(image)
        else supervisord_command(CONF_IN_BOX),
        "env": env,
        "cwd": "/",
        "user": None,
        "hostname": box.hostname or box.name,
        "mounts": [MountSpec(os.fspath(m.source), m.target, m.readonly, "bind") for m in box.mounts],
        "resources": {"memory": r.memory, "cpus": r.cpus, "cpu_shares": None, "pids": r.pids},
        "network": network_name(project),
        "ports": [f"{p.host_ip}:{p.host_port}:{p.box_port}/{p.proto}" if ":" not in p.host_ip
                  else f"[{p.host_ip}]:{p.host_port}:{p.box_port}/{p.proto}" for p in box.ports],  # fmt: skip
        "aliases": [box.name],
        "labels": {
            "devbox.project": project.name,
            "devbox.root": os.fspath(project.root),
            "devbox.box": box.name,
            "devbox.config": box.config_hash(),
            "devbox.services": box.services_hash(),
        },
        "stop_signal": "SIGTERM",
        "stop_timeout": 30.0,
    }


def _create_box(project: model.Project, box: model.Box, image: Any) -> ct.Container:
    from devbox.runtime.spec import MountSpec

    cid = ct.new_id()
    fields = _box_spec(project, box, image)
    base = Path(paths.containers_dir(), cid)
    fields["id"] = cid
    fields["mounts"] = list(fields["mounts"]) + [
        MountSpec(os.fspath(base / "run"), "/run/devbox", False, "bind"),
        MountSpec(os.fspath(base / "svlogs"), LOGS_IN_BOX, False, "bind"),
    ]
    c = ct.create(fields)
    run_dir(c).mkdir(mode=0o700, exist_ok=True)
    log_dir(c).mkdir(mode=0o755, exist_ok=True)
    return c


def _write_conf(c: ct.Container, box: model.Box) -> bool:
    """Write supervisord.conf for the box; True when it changed."""
    from devbox import fsutil
    from devbox.services.config import LISTENER_SCRIPT, listener_source, render

    text = render(box, sock_path=SOCK_IN_BOX, log_dir=LOGS_IN_BOX)
    if BOOT_IN_BOX in c.spec.args:  # PID 1's start-up file (see BOOT_PY)
        b = run_dir(c) / os.path.basename(BOOT_IN_BOX)
        try:
            same = b.read_text() == BOOT_PY
        except (OSError, UnicodeDecodeError):
            same = False
        if not same:
            fsutil.atomic_write(b, BOOT_PY, 0o644)
    # the log listener's script (timestamps for `devbox logs --since`); conf and script change together
    fsutil.atomic_write(run_dir(c) / LISTENER_SCRIPT, listener_source(), 0o644)
    p = run_dir(c) / "supervisord.conf"
    try:
        if p.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    # the box may have replaced the file with a symlink: never follow it
    fsutil.atomic_write(p, text, 0o600)
    return True


def _set_label(c: ct.Container, key: str, value: str) -> None:
    from devbox import fsutil
    from devbox.record import replace

    labels = dict(c.spec.labels)
    labels[key] = value
    c.spec = replace(c.spec, labels=labels)
    fsutil.write_json(os.path.join(c.dir, "spec.json"), c.spec.to_dict())


# ------------------------------------------------------------------------------------------ plan


@dataclass
class Action:
    box: str
    what: str  # build, create, recreate, start, reload-services, none
    why: str = ""

    def describe(self) -> str:
        return f"{self.box}: {self.what}" + (f" ({self.why})" if self.why else "")


def plan(project: model.Project, boxes: list[str] | None = None, *, build: bool = False) -> list[Action]:
    """What `up` would do, without doing it (no builds; image cache lookups only)."""
    out: list[Action] = []
    for name in _selected(project, boxes):
        box = project.boxes[name]
        img = None if build else box_image(project, box, only_cached=True)
        c = box_container(project, name)
        if img is None:
            out.append(Action(name, "build", "image or a build step changed" if not build else "--build"))
        if c is None:
            out.append(Action(name, "create", "no container yet"))
            continue
        if img is None or c.spec.image_digest != img.digest or c.spec.labels.get("devbox.config") != box.config_hash():
            out.append(Action(name, "recreate", "its image or settings changed"))
            continue
        running = c.refresh() == ct.RUNNING
        if not running:
            out.append(Action(name, "start", "halted" if c.state.get("started_at") else "created"))
        elif c.spec.labels.get("devbox.services") != box.services_hash():
            out.append(Action(name, "reload-services", "services changed"))
        else:
            out.append(Action(name, "none", "up to date"))
    return out


def _selected(project: model.Project, boxes: list[str] | None) -> list[str]:
    order = project.box_order()
    if not boxes:
        return order
    for b in boxes:
        if b not in project.boxes:
            import difflib

            close = difflib.get_close_matches(b, list(project.boxes), 1)
            raise errors.ConfigError(f"no box named {b!r} in {project.file.name}",
                                     hint=f"did you mean {close[0]!r}?" if close else
                                     f"boxes: {', '.join(project.boxes)}")  # fmt: skip
    # a box's dependencies come up with it
    want = model.closure({n: b.depends_on for n, b in project.boxes.items()}, boxes)
    return [b for b in order if b in want]


# ------------------------------------------------------------------------------------------ up


@dataclass
class BoxResult:
    box: str
    container: ct.Container
    action: str
    report: Any = None


@dataclass
class UpResult:
    project: model.Project
    boxes: list[BoxResult] = field(default_factory=list)
    elapsed: float = 0.0


def _run_in_box(c: ct.Container) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        code, _ = ct.run_in(c, list(argv), timeout=30)
        return code

    return run


def up(project: model.Project, boxes: list[str] | None = None, *, build: bool = False, say: Say = _stderr,
       no_cache: bool = False, frozen: bool = False) -> UpResult:  # fmt: skip
    t0 = time.monotonic()
    result = UpResult(project)
    names = _selected(project, boxes)
    _ensure_network(project)
    started: dict[str, tuple[ct.Container, str]] = {}
    for name in names:
        box = project.boxes[name]
        for dep in box.depends_on:
            if dep in started:
                _wait_box(project, project.boxes[dep], *started.pop(dep), result)
        img = box_image(project, box, no_cache=no_cache or build, say=say, frozen=frozen)
        c = box_container(project, name)
        action = "none"
        if c is not None and (c.spec.image_digest != img.digest
                              or c.spec.labels.get("devbox.config") != box.config_hash()):  # fmt: skip
            say(f"box {name}: recreating (its image or settings changed)")
            ct.stop(c)
            ct.remove(c, force=True)
            c = None
            action = "recreated"
        if c is None:
            c = _create_box(project, box, img)
            action = action if action != "none" else "created"
        conf_changed = _write_conf(c, box)
        if c.refresh() != ct.RUNNING:
            try:
                ct.start(c)
            except BaseException:
                if action in ("created", "recreated"):  # a box this up made and could not start: gone
                    ct.remove(c, force=True)
                raise
            action = action if action != "none" else "started"
            _set_label(c, "devbox.services", box.services_hash())
        elif conf_changed or c.spec.labels.get("devbox.services") != box.services_hash():
            client = client_for(c)
            client.update()
            _set_label(c, "devbox.services", box.services_hash())
            action = "services reloaded"
        started[name] = (c, action)
    _wait_boxes(project, started, result)
    result.elapsed = time.monotonic() - t0
    return result


def _ensure_network(project: model.Project) -> None:
    from devbox.runtime import network

    nets = {n["name"]: n for n in network.list_networks()}
    if network_name(project) not in nets:
        network.create_network(network_name(project), subnet=project.subnet)


def _box_health(box: model.Box, c: ct.Container) -> Any:
    from devbox.services import health

    client = client_for(c)
    deadline = time.monotonic() + HEALTH_TIMEOUT
    return health.start_in_order(client, box, c.state.get("ip"), _run_in_box(c), deadline)


def _wait_box(project: model.Project, box: model.Box, c: ct.Container, action: str, result: UpResult) -> None:
    report = _box_health(box, c)
    result.boxes.append(BoxResult(box.name, c, action, report))
    report.raise_for_failure()


def _wait_boxes(project: model.Project, started: dict[str, tuple[ct.Container, str]], result: UpResult) -> None:
    """Wait for every started box at once, one thread per box after the first, and report them in
    order (the first failure in that order raises). At once, because supervisord notices that a
    program has stayed up for `startsecs` only when its loop wakes: once a second when idle, at once
    when asked over XML-RPC. A box nobody polls while another one is waited for reaches RUNNING up to
    a second late; three boxes with the default startsecs 1 took 2.3 s instead of 1.3 s."""
    items = list(started.items())
    if len(items) <= 1:
        for name, (c, action) in items:
            _wait_box(project, project.boxes[name], c, action, result)
        return
    import threading

    reports: dict[str, Any] = {}

    def wait(name: str, c: ct.Container) -> None:
        try:
            reports[name] = _box_health(project.boxes[name], c)
        except BaseException as e:  # noqa: BLE001 - raised in order by the main thread
            reports[name] = e

    threads = {name: threading.Thread(target=wait, args=(name, c), daemon=True) for name, (c, _a) in items[1:]}
    for t in threads.values():
        t.start()
    name0, (c0, action0) = items[0]
    _wait_box(project, project.boxes[name0], c0, action0, result)
    for name, (c, action) in items[1:]:
        threads[name].join()
        report = reports[name]
        if isinstance(report, BaseException):
            raise report
        result.boxes.append(BoxResult(name, c, action, report))
        report.raise_for_failure()


# ------------------------------------------------------------------------------------------ other verbs


def halt(project: model.Project, boxes: list[str] | None = None) -> list[str]:
    done = []
    names = boxes or list(reversed(project.box_order()))
    for name in names:
        if name not in project.boxes:
            _selected(project, [name])
        c = box_container(project, name)
        if c is not None and c.refresh() == ct.RUNNING:
            ct.stop(c)
            done.append(name)
    return done


def destroy(project: model.Project) -> list[str]:
    from devbox.runtime import network

    done = []
    for c in project_containers(project):
        ct.remove(c, force=True)
        done.append(c.spec.labels.get("devbox.box", c.name))
    if any(n["name"] == network_name(project) for n in network.list_networks()):
        network.remove_network(network_name(project), force=True)
    return done


def restart(project: model.Project, target: str) -> None:
    box_name, _, service = target.partition("/")
    _selected(project, [box_name])
    c = box_container(project, box_name)
    if c is None or c.refresh() != ct.RUNNING:
        raise errors.IncorrectStatus(f"box {box_name} is not running", hint="start it with `devbox up`")
    if service:
        if service not in project.boxes[box_name].services:
            raise errors.ConfigError(f"box {box_name} has no service {service!r}",
                                     hint=f"services: {', '.join(project.boxes[box_name].services)}")  # fmt: skip
        client_for(c).restart(service)
        return
    ct.stop(c)
    up(project, [box_name])


@dataclass
class BoxStatus:
    box: str
    state: str
    container: ct.Container | None
    image: str
    ip: str | None
    ports: list[str]
    services: list[dict[str, Any]]


def status(project: model.Project) -> list[BoxStatus]:
    out = []
    for name in project.box_order():
        box = project.boxes[name]
        c = box_container(project, name)
        if c is None:
            out.append(BoxStatus(name, "not created", None, box.base, None, [str(p) for p in box.ports], []))
            continue
        st = c.refresh()
        services: list[dict[str, Any]] = []
        if st == ct.RUNNING:
            try:
                for p in client_for(c).processes():
                    svc = box.services.get(p.name)
                    services.append({"name": p.name, "state": p.statename, "pid": p.pid, "uptime": p.uptime,
                                     "health": _quick_health(svc, c, p.statename)})  # fmt: skip
            except errors.DevboxError as e:
                services.append({"name": "supervisord", "state": "UNREACHABLE", "pid": 0, "uptime": 0,
                                 "health": str(e)})  # fmt: skip
        state = {"running": "running", "stopped": "halted", "created": "created"}.get(st, st)
        if st == ct.RUNNING and c.spec.labels.get("devbox.config") != box.config_hash():
            state = "running (outdated: run devbox up)"
        out.append(BoxStatus(name, state, c, box.base, c.state.get("ip") if st == ct.RUNNING else None,
                             [str(p) for p in box.ports], services))  # fmt: skip
    return out


def _quick_health(svc: model.Service | None, c: ct.Container, state: str) -> str:
    from devbox.services import health

    if svc is None or state != "RUNNING":
        return "-"
    if svc.health is None:
        return "healthy"
    problem = health.run_check(svc.health, c.state.get("ip"), _run_in_box(c))
    return "healthy" if problem is None else f"unhealthy: {problem}"


def provision(project: model.Project, boxes: list[str] | None = None, say: Say = _stderr) -> UpResult:
    """Rerun the build steps (no cache) and recreate the boxes."""
    names = _selected(project, boxes)
    for name in names:
        c = box_container(project, name)
        if c is not None and (not boxes or name in boxes):
            ct.stop(c)
            ct.remove(c, force=True)
    return up(project, boxes, no_cache=True, say=say)
