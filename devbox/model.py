"""The desired environment, as frozen dataclasses. No IO, no yaml, no host-dependent defaults.

`devbox.devboxfile.load()` is the only producer of these objects; it validates everything, so code
that consumes a model (plan, orchestrator, services) may trust its invariants:

- names match NAME_RE; every depends_on refers to an existing box/service and there are no cycles;
- paths on the host (mount sources, copy sources, watch paths) are absolute and normalised;
- paths in the box (mount targets, directories, workdirs) are absolute and normalised;
- no string that ends up in supervisord.conf contains a line break, NUL or other control character.

Mappings (env) are plain dicts kept in file order; the dataclasses are frozen but, because of those
dicts, not hashable: compare them with ==, or compare `config_hash()` / `services_hash()`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
NAME_MAX = 40

# Paths a watcher ignores unless a rule's `include` names them (see docs/devboxfile.md, `watch`).
DEFAULT_WATCH_IGNORE: tuple[str, ...] = (
    ".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", ".tox", ".mypy_cache",
    ".pytest_cache", "build", "dist", "target", "*.swp", "*~", ".#*",
)  # fmt: skip


class StepKind(StrEnum):
    RUN = "run"
    COPY = "copy"
    ENV = "env"
    WORKDIR = "workdir"
    USER = "user"


class Proto(StrEnum):
    TCP = "tcp"
    UDP = "udp"


class AutoRestart(StrEnum):
    TRUE = "true"
    FALSE = "false"
    UNEXPECTED = "unexpected"


class WatchAction(StrEnum):
    RESTART = "restart"
    SIGNAL = "signal"
    EXEC = "exec"
    SYNC = "sync"
    REBUILD = "rebuild"


@dataclass(frozen=True)
class BuildStep:
    """One image build step; each becomes one cached layer.

    run:     `command` is the argv (a string in the Devboxfile becomes ("/bin/sh", "-c", string)).
    copy:    `source` (absolute host path) is copied to `target` (absolute path in the image).
    env:     `env` is set for later steps and for the box.
    workdir: `target` is the working directory of later steps (created if missing).
    user:    `user` runs later `run` steps.
    """

    kind: StepKind
    command: tuple[str, ...] = ()
    source: Path | None = None
    target: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None


@dataclass(frozen=True)
class Mount:
    source: Path  # absolute host path
    target: str  # absolute path in the box
    readonly: bool = False


@dataclass(frozen=True)
class Port:
    host_port: int
    box_port: int
    host_ip: str = "127.0.0.1"
    proto: Proto = Proto.TCP

    def __str__(self) -> str:
        ip = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        return f"{ip}:{self.host_port}->{self.box_port}/{self.proto}"


@dataclass(frozen=True)
class Resources:
    memory: int | None = None  # bytes
    cpus: float | None = None
    pids: int | None = None


@dataclass(frozen=True)
class Health:
    """A service's own readiness check; exactly one of tcp, http, command is set.

    tcp:     a port in the box; healthy when a TCP connect to BOX_IP:port succeeds.
    http:    a URL of the form "http://localhost:PORT/PATH"; the host part is replaced by the box's IP
             when checking. Healthy when the GET answers with a status < 500.
    command: argv run in the box; healthy when it exits 0.
    Times are in seconds. Failures during `start_period` do not count; after it, `retries`
    consecutive failures make the service unhealthy.
    """

    tcp: int | None = None
    http: str | None = None
    command: tuple[str, ...] | None = None
    interval: float = 0.1
    timeout: float = 1.0
    retries: int = 3
    start_period: float = 60.0


@dataclass(frozen=True)
class Service:
    name: str
    command: tuple[str, ...]  # argv; supervisor runs it without a shell
    user: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    directory: str | None = None
    autostart: bool = True
    autorestart: AutoRestart = AutoRestart.UNEXPECTED
    exitcodes: tuple[int, ...] = (0,)
    startsecs: int = 1
    startretries: int = 3
    stopsignal: str = "TERM"  # a signal name without the SIG prefix
    stopwaitsecs: int = 10
    priority: int = 999
    depends_on: tuple[str, ...] = ()  # services of the same box
    health: Health | None = None

    @property
    def starts_later(self) -> bool:
        """True when supervisord must not start it on its own: the orchestrator starts it once its
        dependencies are healthy (see services.health.start_in_order)."""
        return bool(self.depends_on) or not self.autostart


@dataclass(frozen=True)
class WatchRule:
    path: Path  # absolute host path
    action: WatchAction
    args: tuple[str, ...] = ()  # restart: (service,); signal: (service, SIG); exec: argv; sync: (dest,)
    include: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()


@dataclass(frozen=True)
class Box:
    name: str
    base: str
    packages: tuple[str, ...] = ()
    build: tuple[BuildStep, ...] = ()
    mounts: tuple[Mount, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    ports: tuple[Port, ...] = ()
    resources: Resources = field(default_factory=Resources)
    depends_on: tuple[str, ...] = ()
    services: dict[str, Service] = field(default_factory=dict)  # file order
    watch: tuple[WatchRule, ...] = ()
    hostname: str = ""
    user: str | None = None  # default user of `devbox shell`/`exec` and of services
    workdir: str | None = None  # default directory of `devbox shell`/`exec` and of services

    def image_hash(self) -> str:
        """Changes when the box's image must be rebuilt (base, packages, build steps).

        Copied files' content is not part of it: the image builder keys its cache on content."""
        return _digest({"base": self.base, "packages": self.packages, "build": self.build})

    def config_hash(self) -> str:
        """Changes when the box must be recreated: image, mounts, env, ports, resources, hostname."""
        return _digest(
            {
                "image": self.image_hash(),
                "mounts": self.mounts,
                "env": self.env,
                "ports": self.ports,
                "resources": self.resources,
                "hostname": self.hostname,
            }
        )

    fingerprint = config_hash

    def services_hash(self) -> str:
        """Changes when only supervisord's config must be re-read (services added/changed/removed)."""
        return _digest({"services": list(self.services.values())})

    def service_order(self) -> list[str]:
        """Services in start order: dependencies first, then file order."""
        return toposort({n: s.depends_on for n, s in self.services.items()})


@dataclass(frozen=True)
class Project:
    name: str
    root: Path  # the folder holding the Devboxfile
    file: Path  # the Devboxfile
    boxes: dict[str, Box] = field(default_factory=dict)  # file order
    subnet: str | None = None  # e.g. "10.89.3.0/24"; None = picked from devbox's pool

    def box_order(self) -> list[str]:
        return toposort_boxes(self)


def toposort(deps: dict[str, tuple[str, ...]]) -> list[str]:
    """Stable topological order: every name after its dependencies, otherwise in the given order.

    Dependencies that are not keys are ignored (the loader has already rejected them); a cycle raises
    ValueError naming it (the loader reports cycles itself, with a line number)."""
    out: list[str] = []
    done: set[str] = set()
    visiting: list[str] = []

    def visit(n: str) -> None:
        if n in done:
            return
        if n in visiting:
            cycle = visiting[visiting.index(n) :] + [n]
            raise ValueError("dependency cycle: " + " -> ".join(cycle))
        visiting.append(n)
        for d in deps[n]:
            if d in deps:
                visit(d)
        visiting.pop()
        done.add(n)
        out.append(n)

    for n in deps:
        visit(n)
    return out


def closure(deps: dict[str, tuple[str, ...]], start: list[str]) -> set[str]:
    """`start` and everything it depends on, directly or not."""
    out: set[str] = set()
    stack = list(start)
    while stack:
        n = stack.pop()
        if n not in out:
            out.add(n)
            stack.extend(deps.get(n, ()))
    return out


def toposort_boxes(project: Project) -> list[str]:
    """Box names in start order: every box after the boxes it depends on, otherwise file order."""
    return toposort({n: b.depends_on for n, b in project.boxes.items()})


def _canon(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {"__type__": type(obj).__name__, **{k: _canon(v) for k, v in asdict(obj).items()}}
    if isinstance(obj, dict):
        return {str(k): _canon(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_canon(v) for v in obj]
    if isinstance(obj, Path):
        return obj.as_posix()
    if isinstance(obj, StrEnum):
        return str(obj)
    return obj


def _digest(obj: Any) -> str:
    raw = json.dumps(_canon(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(raw.encode()).hexdigest()
