"""Devboxfile -> model.Project. The only yaml importer.

The file is composed (not just loaded) with yaml's SafeLoader so that every value keeps its line:
errors read `Devboxfile:12 boxes -> web -> ports[0]: expected HOST:BOX, got '80:80:80'`. Scalars are
resolved by yaml's SafeConstructor, except where YAML 1.1's implicit typing would silently change
what was written (env values, ports, versions): there the text is taken as written, so
`PORT: 8080:80` stays "8080:80" (YAML 1.1 reads it as the base-60 integer 484880).

Nothing here touches the filesystem beyond reading the Devboxfile: paths are resolved lexically
(relative to the Devboxfile's folder) and whether mount sources exist is checked at `up`.
The schema is documented key by key in docs/devboxfile.md.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import posixpath
import re
import shlex
import string
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import yaml

from devbox import model
from devbox.errors import ConfigError
from devbox.model import (
    NAME_MAX,
    NAME_RE,
    AutoRestart,
    Box,
    BuildStep,
    Health,
    Mount,
    Port,
    Project,
    Proto,
    Resources,
    Service,
    StepKind,
    WatchAction,
    WatchRule,
)
from devbox.runtime import resources as rt_resources
from devbox.services import config as svconf

FILENAME = "Devboxfile"
TEMPLATES = ("blank", "python", "node", "tomcat")

TOP_KEYS = ("name", "boxes", "network", "allow_outside")
NETWORK_KEYS = ("subnet",)
BOX_KEYS = (
    "base",
    "packages",
    "build",
    "mounts",
    "env",
    "ports",
    "resources",
    "depends_on",
    "services",
    "watch",
    "hostname",
    "user",
    "workdir",
)
MOUNT_KEYS = ("source", "target", "readonly", "allow_outside")
PORT_KEYS = ("host", "box", "host_ip", "proto")
RESOURCE_KEYS = ("memory", "cpus", "pids")
SERVICE_KEYS = (
    "command",
    "user",
    "env",
    "directory",
    "autostart",
    "autorestart",
    "exitcodes",
    "startsecs",
    "startretries",
    "stopsignal",
    "stopwaitsecs",
    "priority",
    "depends_on",
    "health",
)
HEALTH_KEYS = ("tcp", "http", "command", "interval", "timeout", "retries", "start_period")
WATCH_KEYS = ("path", "include", "ignore", "action")
STEP_KINDS = tuple(k.value for k in StepKind)

_HOSTNAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.:~-]*(=[A-Za-z0-9+.:~-]+)?")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


# --------------------------------------------------------------------------------------------------
# Public API


def find(start: Path) -> Path:
    """The nearest Devboxfile in `start` or one of its parents."""
    from devbox import fsutil

    found = fsutil.find_upwards(start, FILENAME)
    if found is not None:
        return Path(found)
    start = Path(os.path.abspath(start))
    raise ConfigError(
        f"no {FILENAME} in {start} or any parent folder",
        hint="run `devbox init` to create one (templates: " + ", ".join(TEMPLATES) + ")",
    )


def load(path: Path) -> Project:
    """Read and validate a Devboxfile."""
    path = Path(os.path.abspath(path))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file", hint="run `devbox init` to create one") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    return loads(text, path)


def loads(text: str, path: Path) -> Project:
    """Validate Devboxfile text as if it were read from `path` (which is not read)."""
    return _Parser(Path(os.path.abspath(path))).project(text)


def render_template(name: str, project_name: str) -> str:
    """The text of a commented Devboxfile for `devbox init --template NAME`."""
    if name not in TEMPLATES:
        raise ConfigError(
            f"unknown template {name!r}" + _did_you_mean(name, TEMPLATES),
            hint="templates: " + ", ".join(TEMPLATES),
        )
    project_name = default_project_name(project_name)
    text = resources.files("devbox.templates").joinpath(f"Devboxfile.{name}").read_text()
    return string.Template(text).substitute(project=project_name)


def default_project_name(folder_name: str) -> str:
    """A valid project name derived from a folder name ("My App" -> "my-app")."""
    n = re.sub(r"[^a-z0-9_-]+", "-", folder_name.lower()).strip("-_")[:NAME_MAX].rstrip("-_")
    return n or "project"


def parse_memory(value: str | int) -> int:
    """'512m', '1g', '1.5GiB', 1073741824 -> bytes (powers of 1024; at least 6m). The engine's parser,
    so that a Devboxfile and `devbox run --memory` accept the same values."""
    return rt_resources.parse_memory(value, "memory")


def parse_cpus(value: str | float) -> float:
    return rt_resources.parse_cpus(value, "cpus")


def parse_pids(value: str | int) -> int:
    return rt_resources.parse_pids(value, "pids")


def parse_duration(value: str | float) -> float:
    """'500ms', '2s', '1m', 3 (seconds) -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        n = float(value)
    else:
        m = _DURATION_RE.fullmatch(str(value).strip())
        if not m:
            raise ConfigError(f"expected a duration like 500ms, 2s or 1m, got {value!r}")
        n = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if n < 0:
        raise ConfigError(f"must not be negative, got {value!r}")
    return n


# --------------------------------------------------------------------------------------------------
# The parser


def _did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    m = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {m[0]!r}?)" if m else ""


def _display_name(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return os.fspath(path)
    return rel if not rel.startswith("..") else os.fspath(path)


def _join(path: str, key: str) -> str:
    return f"{path} -> {key}" if path else key


class _Parser:
    def __init__(self, file: Path) -> None:
        self.file = file
        self.root = file.parent
        self.fname = _display_name(file)
        self.constructor = yaml.constructor.SafeConstructor()
        self.allow_outside = False

    # ---- errors and scalars ----------------------------------------------------------------------

    def fail(self, node: yaml.Node | None, path: str, msg: str, hint: str | None = None) -> NoReturn:
        line = node.start_mark.line + 1 if node is not None else 1
        where = f" {path}:" if path else ":"
        raise ConfigError(f"{self.fname}:{line}{where} {msg}", hint=hint)

    def value(self, node: yaml.Node) -> Any:
        return self.constructor.construct_object(node, deep=True)

    def kind(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        v = self.value(node)
        if v is None:
            return "nothing (null)"
        return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
            type(v), type(v).__name__
        ) + f" {node.value!r}"

    def mapping(
        self, node: yaml.Node, path: str, keys: tuple[str, ...], what: str = "a mapping"
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """key -> (key node, value node); unknown and duplicate keys are errors."""
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, path, f"expected {what}, got {self.kind(node)}")
        self.constructor.flatten_mapping(node)  # applies `<<: *anchor` merges
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for k, v in node.value:
            key = self.value(k) if isinstance(k, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self.fail(k, path, f"keys must be strings, got {self.kind(k)}")
            if key in out:
                first = out[key][0].start_mark.line + 1
                self.fail(k, _join(path, key), f"duplicate key (first set on line {first})")
            if keys and key not in keys:
                if not path and key.startswith("x-"):
                    continue  # extension fields, e.g. for YAML anchors
                self.fail(
                    k,
                    _join(path, key),
                    "unknown key" + _did_you_mean(key, keys),
                    hint="allowed here: " + ", ".join(keys),
                )
            out[key] = (k, v)
        return out

    def names(self, node: yaml.Node, path: str, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """A mapping whose keys are box/service names."""
        m = self.mapping(node, path, (), f"a mapping of {what} names")
        for key, (k, _v) in m.items():
            self.check_name(k, _join(path, key), key, what)
        return m

    def check_name(self, node: yaml.Node, path: str, name: str, what: str) -> None:
        if not NAME_RE.fullmatch(name) or len(name) > NAME_MAX:
            self.fail(
                node,
                path,
                f"invalid {what} name {name!r}",
                hint=f"{what} names are lowercase letters, digits, '_' and '-', starting with a "
                f"letter or digit, at most {NAME_MAX} characters",
            )

    def seq(self, node: yaml.Node, path: str, what: str = "a list") -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, path, f"expected {what}, got {self.kind(node)}")
        return list(node.value)

    def str_(self, node: yaml.Node, path: str, what: str = "a string", raw: bool = False) -> str:
        """A string. With raw=True any scalar is taken as written (`1.10` stays "1.10")."""
        if isinstance(node, yaml.ScalarNode):
            v = self.value(node)
            if isinstance(v, str):
                return v
            if raw and v is not None and isinstance(v, bool | int | float):
                return str(node.value)
        self.fail(node, path, f"expected {what}, got {self.kind(node)}")

    def line_safe(self, node: yaml.Node, path: str, value: str) -> str:
        p = svconf.value_problem(value)
        if p:
            self.fail(node, path, p)
        return value

    def bool_(self, node: yaml.Node, path: str) -> bool:
        v = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(v, bool):
            self.fail(node, path, f"expected true or false, got {self.kind(node)}")
        return v

    def int_(self, node: yaml.Node, path: str, lo: int, hi: int) -> int:
        v = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(v, int) or isinstance(v, bool):
            self.fail(node, path, f"expected an integer, got {self.kind(node)}")
        if not lo <= v <= hi:
            self.fail(node, path, f"must be between {lo} and {hi}, got {v}")
        return v

    def parsed(self, node: yaml.Node, path: str, fn: Callable[[Any], Any]) -> Any:
        v = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if v is None or isinstance(v, bool):
            self.fail(node, path, f"expected a value, got {self.kind(node)}")
        try:
            return fn(v)
        except ConfigError as e:
            self.fail(node, path, e.message, e.hint)

    def str_list(
        self, node: yaml.Node, path: str, what: str = "a list of strings"
    ) -> list[tuple[yaml.Node, str]]:
        return [(n, self.str_(n, f"{path}[{i}]")) for i, n in enumerate(self.seq(node, path, what))]

    def env(self, node: yaml.Node, path: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, (k, v) in self.mapping(node, path, (), "a mapping of variable names to values").items():
            p = _join(path, key)
            if not svconf.ENV_KEY_RE.fullmatch(key):
                self.fail(
                    k,
                    p,
                    f"invalid variable name {key!r}",
                    hint="names are letters, digits and '_', not starting with a digit",
                )
            val = self.str_(v, p, "a string, number or boolean", raw=True)
            out[key] = self.line_safe(v, p, val)
        return out

    def host_path(self, node: yaml.Node, path: str, value: str) -> Path:
        self.line_safe(node, path, value)
        if value.startswith("~"):
            self.fail(
                node,
                path,
                f"'~' is not expanded, got {value!r}",
                hint="use a path relative to the Devboxfile's folder, or an absolute one",
            )
        return Path(os.path.normpath(os.path.join(self.root, value)))

    def box_path(self, node: yaml.Node, path: str, value: str) -> str:
        self.line_safe(node, path, value)
        if not value.startswith("/"):
            self.fail(node, path, f"expected an absolute path in the box, got {value!r}")
        if ".." in value.split("/"):
            self.fail(node, path, f"'..' is not allowed in a box path, got {value!r}")
        return posixpath.normpath(value).replace("//", "/")

    def command(self, node: yaml.Node, path: str, shell: bool) -> tuple[str, ...]:
        """A command: a list is the argv; a string is split like a shell would (without running
        one) or, with shell=True, run by /bin/sh -c."""
        if isinstance(node, yaml.SequenceNode):
            argv = [self.str_(n, f"{path}[{i}]", raw=True) for i, n in enumerate(node.value)]
            for i, (n, a) in enumerate(zip(node.value, argv, strict=True)):
                self.line_safe(n, f"{path}[{i}]", a)
        else:
            s = self.line_safe(node, path, self.str_(node, path, "a command (a string or a list)"))
            if shell:
                argv = ["/bin/sh", "-c", s]
            else:
                try:
                    argv = shlex.split(s)
                except ValueError as e:
                    self.fail(
                        node,
                        path,
                        f"cannot split the command: {e}",
                        hint="quote like a shell would; for pipes or `&&` use: sh -c '...'",
                    )
        if not argv or not argv[0]:
            self.fail(node, path, "must not be empty")
        return tuple(argv)

    def user(self, node: yaml.Node, path: str) -> str:
        u = self.str_(node, path, "a user name or uid", raw=True)
        if not svconf.USER_RE.fullmatch(u):
            self.fail(
                node,
                path,
                f"invalid user name {u!r}",
                hint="a login name like www-data, or a numeric uid; the user must exist in the box",
            )
        return u

    # ---- the document ----------------------------------------------------------------------------

    def project(self, text: str) -> Project:
        try:
            doc = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = mark.line + 1 if mark else 1
            raise ConfigError(f"{self.fname}:{line}: invalid YAML: {e.problem or e.context}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{self.fname}:1: invalid YAML: {e}") from None
        if doc is None:
            raise ConfigError(
                f"{self.fname}:1: the file is empty", hint="run `devbox init` for a commented example"
            )
        top = self.mapping(doc, "", TOP_KEYS)

        name = default_project_name(self.root.name)
        if "name" in top:
            k, v = top["name"]
            name = self.str_(v, "name", raw=True)
            self.check_name(v, "name", name, "project")
        subnet = None
        if "network" in top:
            net = self.mapping(top["network"][1], "network", NETWORK_KEYS)
            if "subnet" in net:
                subnet = self.subnet(net["subnet"][1], "network -> subnet")
        if "allow_outside" in top:
            self.allow_outside = self.bool_(top["allow_outside"][1], "allow_outside")
        if "boxes" not in top:
            self.fail(
                doc, "", "missing key 'boxes'", hint="a Devboxfile needs at least one box under `boxes:`"
            )
        bnode = top["boxes"][1]
        boxes_m = self.names(bnode, "boxes", "box")
        if not boxes_m:
            self.fail(bnode, "boxes", "no boxes defined")
        boxes = {bname: self.box(bname, v, f"boxes -> {bname}") for bname, (_k, v) in boxes_m.items()}

        # cross-box checks: depends_on targets and cycles, published ports
        for bname, (_k, v) in boxes_m.items():
            self.check_deps(v, f"boxes -> {bname}", boxes[bname].depends_on, boxes, "box")
        self.check_cycles(boxes_m, {n: b.depends_on for n, b in boxes.items()}, "boxes", "box")
        self.check_ports(boxes_m, boxes)
        return Project(name=name, root=self.root, file=self.file, boxes=boxes, subnet=subnet)

    def subnet(self, node: yaml.Node, path: str) -> str:
        s = self.str_(node, path, "a subnet like 10.89.3.0/24")
        try:
            net = ipaddress.IPv4Network(s, strict=True)
        except ValueError as e:
            self.fail(node, path, f"expected a subnet like 10.89.3.0/24, got {s!r} ({e})")
        if not net.is_private or net.prefixlen > 29 or net.prefixlen < 16:
            self.fail(node, path, f"expected a private IPv4 subnet from /16 to /29, got {s!r}")
        return str(net)

    def check_deps(
        self,
        node: yaml.Node,
        path: str,
        deps: tuple[str, ...],
        known: dict[str, Any],
        what: str,
        self_name: str | None = None,
    ) -> None:
        if not deps:
            return
        dnode = self.mapping(node, path, ())["depends_on"][1]
        for i, d in enumerate(deps):
            if d not in known:
                self.fail(
                    dnode.value[i],
                    f"{path} -> depends_on[{i}]",
                    f"no {what} named {d!r}" + _did_you_mean(d, list(known)),
                    hint=f"{what}s here: " + ", ".join(known),
                )

    def check_cycles(
        self,
        nodes: dict[str, tuple[yaml.Node, yaml.Node]],
        deps: dict[str, tuple[str, ...]],
        path: str,
        what: str,
    ) -> None:
        try:
            model.toposort(deps)
        except ValueError as e:
            first = str(e).split(": ", 1)[1].split(" -> ")[0]
            vnode = nodes[first][1]
            dnode = self.mapping(vnode, "", ())["depends_on"][1]
            self.fail(
                dnode,
                f"{path} -> {first} -> depends_on",
                f"{what} dependency cycle: " + str(e).split(": ", 1)[1],
            )

    def check_ports(self, boxes_m: dict[str, tuple[yaml.Node, yaml.Node]], boxes: dict[str, Box]) -> None:
        """No two published ports may bind the same host port (0.0.0.0 / :: overlap every address)."""
        seen: list[tuple[Port, str]] = []
        for bname, box in boxes.items():
            for i, port in enumerate(box.ports):
                for other, where in seen:
                    if (other.host_port, other.proto) != (port.host_port, port.proto):
                        continue
                    ips = {other.host_ip, port.host_ip}
                    if len(ips) == 1 or ips & {"0.0.0.0", "::"}:
                        pnode = self.mapping(boxes_m[bname][1], "", ())["ports"][1].value[i]
                        self.fail(
                            pnode,
                            f"boxes -> {bname} -> ports[{i}]",
                            f"host port {port.host_ip}:{port.host_port}/{port.proto} is already "
                            f"published by {where}",
                        )
                seen.append((port, f"boxes -> {bname} -> ports[{i}]"))

    # ---- boxes -----------------------------------------------------------------------------------

    def box(self, name: str, node: yaml.Node, path: str) -> Box:
        m = self.mapping(node, path, BOX_KEYS)
        if "base" not in m:
            self.fail(node, path, "missing key 'base'", hint="e.g. base: debian:bookworm")
        g = {k: v for k, (_kn, v) in m.items()}
        base = self.line_safe(
            g["base"], f"{path} -> base", self.str_(g["base"], f"{path} -> base", "an image reference")
        )
        if not base.strip() or any(c.isspace() for c in base):
            self.fail(
                g["base"],
                f"{path} -> base",
                f"expected an image reference like debian:bookworm, got {base!r}",
            )

        packages: list[str] = []
        if "packages" in g:
            for n, p in self.str_list(g["packages"], f"{path} -> packages"):
                if not _PACKAGE_RE.fullmatch(p):
                    self.fail(n, f"{path} -> packages[{len(packages)}]", f"invalid package name {p!r}")
                packages.append(p)

        build = (
            tuple(
                self.step(n, f"{path} -> build[{i}]")
                for i, n in enumerate(self.seq(g["build"], f"{path} -> build"))
            )
            if "build" in g
            else ()
        )
        mounts = (
            tuple(
                self.mount(n, f"{path} -> mounts[{i}]")
                for i, n in enumerate(self.seq(g["mounts"], f"{path} -> mounts"))
            )
            if "mounts" in g
            else ()
        )
        targets: dict[str, int] = {}
        for i, mt in enumerate(mounts):
            if mt.target in targets:
                self.fail(
                    g["mounts"].value[i],
                    f"{path} -> mounts[{i}]",
                    f"{mt.target} is already mounted by mounts[{targets[mt.target]}]",
                )
            targets[mt.target] = i
        env = self.env(g["env"], f"{path} -> env") if "env" in g else {}
        ports = (
            tuple(
                self.port(n, f"{path} -> ports[{i}]")
                for i, n in enumerate(self.seq(g["ports"], f"{path} -> ports"))
            )
            if "ports" in g
            else ()
        )
        resources_ = (
            self.resources(g["resources"], f"{path} -> resources") if "resources" in g else Resources()
        )
        depends_on: list[str] = []
        if "depends_on" in g:
            for i, (n, d) in enumerate(self.str_list(g["depends_on"], f"{path} -> depends_on")):
                if d == name:
                    self.fail(n, f"{path} -> depends_on[{i}]", f"box {name!r} cannot depend on itself")
                depends_on.append(d)
        hostname = name.replace("_", "-")
        if "hostname" in g:
            hostname = self.str_(g["hostname"], f"{path} -> hostname")
            if not _HOSTNAME_RE.fullmatch(hostname):
                self.fail(
                    g["hostname"],
                    f"{path} -> hostname",
                    f"invalid hostname {hostname!r}",
                    hint="lowercase letters, digits and '-', at most 63 characters",
                )
        user = self.user(g["user"], f"{path} -> user") if "user" in g else None
        workdir = None
        if "workdir" in g:
            workdir = self.box_path(
                g["workdir"], f"{path} -> workdir", self.str_(g["workdir"], f"{path} -> workdir")
            )
            self.comment_safe(g["workdir"], f"{path} -> workdir", workdir)

        services: dict[str, Service] = {}
        if "services" in g:
            smap = self.names(g["services"], f"{path} -> services", "service")
            for sname, (_k, v) in smap.items():
                services[sname] = self.service(sname, v, f"{path} -> services -> {sname}", user, workdir)
            for sname, (_k, v) in smap.items():
                spath = f"{path} -> services -> {sname}"
                self.check_deps(v, spath, services[sname].depends_on, services, "service")
            self.check_cycles(
                smap, {n: s.depends_on for n, s in services.items()}, f"{path} -> services", "service"
            )

        watch = (
            tuple(
                self.watch(n, f"{path} -> watch[{i}]", services)
                for i, n in enumerate(self.seq(g["watch"], f"{path} -> watch"))
            )
            if "watch" in g
            else ()
        )
        return Box(
            name=name,
            base=base,
            packages=tuple(packages),
            build=build,
            mounts=mounts,
            env=env,
            ports=ports,
            resources=resources_,
            depends_on=tuple(depends_on),
            services=services,
            watch=watch,
            hostname=hostname,
            user=user,
            workdir=workdir,
        )

    def comment_safe(self, node: yaml.Node, path: str, value: str) -> None:
        p = svconf.comment_problem(value)
        if p:
            self.fail(node, path, p)

    def step(self, node: yaml.Node, path: str) -> BuildStep:
        if isinstance(node, yaml.ScalarNode | yaml.SequenceNode):  # shorthand for `run:`
            return BuildStep(StepKind.RUN, command=self.command(node, path, shell=True))
        m = self.mapping(node, path, (*STEP_KINDS, "to"), "a build step (run, copy, env, workdir or user)")
        kinds = [k for k in m if k in STEP_KINDS]
        if len(kinds) != 1:
            self.fail(
                node,
                path,
                "a build step needs exactly one of "
                + ", ".join(STEP_KINDS)
                + (f", got {', '.join(kinds)}" if kinds else ""),
            )
        kind = StepKind(kinds[0])
        v = m[kind][1]
        p = f"{path} -> {kind}"
        if "to" in m and kind is not StepKind.COPY:
            self.fail(m["to"][0], f"{path} -> to", "'to' belongs to a copy step")
        if kind is StepKind.RUN:
            return BuildStep(kind, command=self.command(v, p, shell=True))
        if kind is StepKind.COPY:
            if "to" not in m:
                self.fail(
                    node,
                    path,
                    "a copy step needs 'to' (the destination in the image)",
                    hint="e.g. {copy: ./app.war, to: /var/lib/tomcat10/webapps/ROOT.war}",
                )
            src = self.host_path(v, p, self.str_(v, p))
            dst = self.box_path(m["to"][1], f"{path} -> to", self.str_(m["to"][1], f"{path} -> to"))
            return BuildStep(kind, source=src, target=dst)
        if kind is StepKind.ENV:
            return BuildStep(kind, env=self.env(v, p))
        if kind is StepKind.WORKDIR:
            return BuildStep(kind, target=self.box_path(v, p, self.str_(v, p)))
        return BuildStep(kind, user=self.user(v, p))

    def mount(self, node: yaml.Node, path: str) -> Mount:
        allow = self.allow_outside
        if isinstance(node, yaml.MappingNode):
            m = self.mapping(node, path, MOUNT_KEYS)
            for req in ("source", "target"):
                if req not in m:
                    self.fail(node, path, f"missing key {req!r}")
            snode, tnode = m["source"][1], m["target"][1]
            source_s = self.str_(snode, f"{path} -> source")
            target_s = self.str_(tnode, f"{path} -> target")
            ro = self.bool_(m["readonly"][1], f"{path} -> readonly") if "readonly" in m else False
            if "allow_outside" in m:
                allow = self.bool_(m["allow_outside"][1], f"{path} -> allow_outside")
            spath, tpath = f"{path} -> source", f"{path} -> target"
        else:
            s = self.str_(node, path, "SOURCE:TARGET[:ro] or a mapping")
            parts = s.split(":")
            if len(parts) == 3 and parts[2] in ("ro", "rw"):
                ro = parts[2] == "ro"
                parts = parts[:2]
            else:
                ro = False
            if len(parts) != 2 or not parts[0] or not parts[1]:
                self.fail(node, path, f"expected SOURCE:TARGET or SOURCE:TARGET:ro, got {s!r}")
            source_s, target_s = parts
            snode = tnode = node
            spath = tpath = path
        source = self.host_path(snode, spath, source_s)
        target = self.box_path(tnode, tpath, target_s)
        if target == "/":
            self.fail(tnode, tpath, "cannot mount over / of the box")
        if not allow and not (source == self.root or self.root in source.parents):
            self.fail(
                snode,
                spath,
                f"{source} is outside the project folder {self.root}",
                hint="set `allow_outside: true` on this mount (mapping form) or at the top of "
                "the Devboxfile to allow it",
            )
        return Mount(source=source, target=target, readonly=ro)

    def port(self, node: yaml.Node, path: str) -> Port:
        if isinstance(node, yaml.MappingNode):
            m = self.mapping(node, path, PORT_KEYS)
            if "box" not in m:
                self.fail(node, path, "missing key 'box' (the port inside the box)")
            box_port = self.int_(m["box"][1], f"{path} -> box", 1, 65535)
            host_port = self.int_(m["host"][1], f"{path} -> host", 1, 65535) if "host" in m else box_port
            host_ip = "127.0.0.1"
            if "host_ip" in m:
                host_ip = self.ip(
                    m["host_ip"][1], f"{path} -> host_ip", self.str_(m["host_ip"][1], f"{path} -> host_ip")
                )
            proto = Proto.TCP
            if "proto" in m:
                ps = self.str_(m["proto"][1], f"{path} -> proto")
                if ps not in ("tcp", "udp"):
                    self.fail(m["proto"][1], f"{path} -> proto", f"expected tcp or udp, got {ps!r}")
                proto = Proto(ps)
            return Port(host_port=host_port, box_port=box_port, host_ip=host_ip, proto=proto)
        s = self.str_(node, path, "HOST:BOX", raw=True)
        proto = Proto.TCP
        body = s
        if "/" in s:
            body, _, ps = s.rpartition("/")
            if ps not in ("tcp", "udp"):
                self.fail(node, path, f"expected tcp or udp after '/', got {s!r}")
            proto = Proto(ps)
        host_ip = "127.0.0.1"
        mm = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(.*)", body)
        if mm:
            host_ip, body = self.ip(node, path, mm.group(1)), mm.group(2)
        parts = body.split(":")
        if len(parts) == 3 and not mm:
            host_ip = self.ip(node, path, parts[0])
            parts = parts[1:]
        if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
            self.fail(
                node,
                path,
                f"expected HOST:BOX, got {s!r}",
                hint="forms: 8080:80, 127.0.0.1:8080:80, 8080:80/udp, or 8080 (same port on both sides)",
            )
        nums = [int(p) for p in parts]
        for n in nums:
            if not 1 <= n <= 65535:
                self.fail(node, path, f"ports are 1-65535, got {s!r}")
        return Port(host_port=nums[0], box_port=nums[-1], host_ip=host_ip, proto=proto)

    def ip(self, node: yaml.Node, path: str, s: str) -> str:
        try:
            return str(ipaddress.ip_address(s))
        except ValueError:
            self.fail(node, path, f"expected an IP address to publish on, got {s!r}")

    def resources(self, node: yaml.Node, path: str) -> Resources:
        m = self.mapping(node, path, RESOURCE_KEYS)
        return Resources(
            memory=self.parsed(m["memory"][1], f"{path} -> memory", parse_memory) if "memory" in m else None,
            cpus=self.parsed(m["cpus"][1], f"{path} -> cpus", parse_cpus) if "cpus" in m else None,
            pids=self.parsed(m["pids"][1], f"{path} -> pids", parse_pids) if "pids" in m else None,
        )

    # ---- services --------------------------------------------------------------------------------

    def service(
        self, name: str, node: yaml.Node, path: str, box_user: str | None, box_workdir: str | None
    ) -> Service:
        if isinstance(node, yaml.ScalarNode) and isinstance(self.value(node), str):
            m: dict[str, tuple[yaml.Node, yaml.Node]] = {"command": (node, node)}  # `web: python3 app.py`
        else:
            m = self.mapping(node, path, SERVICE_KEYS, "a mapping (or a command string)")
        g = {k: v for k, (_kn, v) in m.items()}
        if "command" not in g:
            self.fail(node, path, "missing key 'command'")
        command = self.command(g["command"], f"{path} -> command", shell=False)
        kw: dict[str, Any] = {"name": name, "command": command}
        kw["user"] = self.user(g["user"], f"{path} -> user") if "user" in g else box_user
        if "env" in g:
            env = self.env(g["env"], f"{path} -> env")
            for key, (_k, v) in self.mapping(g["env"], "", ()).items():
                p = svconf.env_value_problem(env[key])
                if p:
                    self.fail(
                        v,
                        f"{path} -> env -> {key}",
                        p,
                        hint="set it in the box's `env` instead (boxes -> NAME -> env), which "
                        "does not go through supervisord.conf",
                    )
            kw["env"] = env
        directory = box_workdir
        if "directory" in g:
            directory = self.box_path(
                g["directory"], f"{path} -> directory", self.str_(g["directory"], f"{path} -> directory")
            )
            self.comment_safe(g["directory"], f"{path} -> directory", directory)
        kw["directory"] = directory
        if "autostart" in g:
            kw["autostart"] = self.bool_(g["autostart"], f"{path} -> autostart")
        if "autorestart" in g:
            n = g["autorestart"]
            v = self.value(n) if isinstance(n, yaml.ScalarNode) else None
            if isinstance(v, bool):
                kw["autorestart"] = AutoRestart.TRUE if v else AutoRestart.FALSE
            elif v == "unexpected":
                kw["autorestart"] = AutoRestart.UNEXPECTED
            else:
                self.fail(
                    n, f"{path} -> autorestart", f"expected true, false or unexpected, got {self.kind(n)}"
                )
        if "exitcodes" in g:
            codes = self.seq(g["exitcodes"], f"{path} -> exitcodes", "a list of exit codes")
            kw["exitcodes"] = tuple(
                self.int_(n, f"{path} -> exitcodes[{i}]", 0, 255) for i, n in enumerate(codes)
            )
        for key, hi in (
            ("startsecs", 3600),
            ("startretries", 100),
            ("stopwaitsecs", 3600),
            ("priority", 9999),
        ):
            if key in g:
                kw[key] = self.int_(g[key], f"{path} -> {key}", 0, hi)
        if "stopsignal" in g:
            sig_s = self.str_(g["stopsignal"], f"{path} -> stopsignal", "a signal name")
            sig = svconf.normalize_signal(sig_s)
            if sig is None:
                self.fail(
                    g["stopsignal"],
                    f"{path} -> stopsignal",
                    f"unknown signal {sig_s!r}"
                    + _did_you_mean(sig_s.upper().removeprefix("SIG"), sorted(svconf.SIGNALS)),
                )
            kw["stopsignal"] = sig
        if "depends_on" in g:
            deps = []
            for i, (n, d) in enumerate(self.str_list(g["depends_on"], f"{path} -> depends_on")):
                if d == name:
                    self.fail(n, f"{path} -> depends_on[{i}]", f"service {name!r} cannot depend on itself")
                deps.append(d)
            kw["depends_on"] = tuple(deps)
        if "health" in g:
            kw["health"] = self.health(g["health"], f"{path} -> health")
        return Service(**kw)

    def health(self, node: yaml.Node, path: str) -> Health:
        m = self.mapping(node, path, HEALTH_KEYS)
        checks = [k for k in ("tcp", "http", "command") if k in m]
        if len(checks) != 1:
            self.fail(
                node,
                path,
                "a health check needs exactly one of tcp, http, command"
                + (f", got {', '.join(checks)}" if checks else ""),
            )
        kw: dict[str, Any] = {}
        if "tcp" in m:
            kw["tcp"] = self.int_(m["tcp"][1], f"{path} -> tcp", 1, 65535)
        if "http" in m:
            kw["http"] = self.http(m["http"][1], f"{path} -> http")
        if "command" in m:
            kw["command"] = self.command(m["command"][1], f"{path} -> command", shell=True)
        for key in ("interval", "timeout", "start_period"):
            if key in m:
                kw[key] = self.parsed(m[key][1], f"{path} -> {key}", parse_duration)
        if kw.get("interval", 1) <= 0 or kw.get("timeout", 1) <= 0:
            key = "interval" if kw.get("interval", 1) <= 0 else "timeout"
            self.fail(m[key][1], f"{path} -> {key}", "must be greater than 0")
        if "retries" in m:
            kw["retries"] = self.int_(m["retries"][1], f"{path} -> retries", 1, 1000)
        return Health(**kw)

    def http(self, node: yaml.Node, path: str) -> str:
        s = self.str_(node, path, "PORT, PORT/PATH or http://localhost:PORT/PATH", raw=True)
        self.line_safe(node, path, s)
        mm = re.fullmatch(r"(?:http://(?:localhost|127\.0\.0\.1):)?(\d{1,5})(/[^\s]*)?", s)
        if not mm or not 1 <= int(mm.group(1)) <= 65535:
            self.fail(
                node,
                path,
                f"expected PORT, PORT/PATH or http://localhost:PORT/PATH, got {s!r}",
                hint="the check runs from the host against the box's IP; 'localhost' stands for the box",
            )
        return f"http://localhost:{int(mm.group(1))}{mm.group(2) or '/'}"

    # ---- watch -----------------------------------------------------------------------------------

    def watch(self, node: yaml.Node, path: str, services: dict[str, Service]) -> WatchRule:
        m = self.mapping(node, path, WATCH_KEYS)
        for req in ("path", "action"):
            if req not in m:
                self.fail(node, path, f"missing key {req!r}")
        wpath = self.host_path(m["path"][1], f"{path} -> path", self.str_(m["path"][1], f"{path} -> path"))
        include = (
            tuple(s for _n, s in self.str_list(m["include"][1], f"{path} -> include"))
            if "include" in m
            else ()
        )
        ignore = (
            tuple(s for _n, s in self.str_list(m["ignore"][1], f"{path} -> ignore")) if "ignore" in m else ()
        )
        anode = m["action"][1]
        apath = f"{path} -> action"
        a = self.line_safe(anode, apath, self.str_(anode, apath, "an action like 'restart web'"))
        verb, _, rest = a.strip().partition(" ")
        rest = rest.strip()
        actions = [x.value for x in WatchAction]
        if verb not in actions:
            self.fail(
                anode,
                apath,
                f"unknown action {verb!r}" + _did_you_mean(verb, actions),
                hint="actions: restart SERVICE, signal SERVICE SIGNAL, exec COMMAND, sync DEST, rebuild",
            )
        action = WatchAction(verb)
        args: tuple[str, ...]
        if action is WatchAction.EXEC:
            if not rest:
                self.fail(anode, apath, "exec needs a command, e.g. 'exec make -C /srv/app'")
            args = ("/bin/sh", "-c", rest)
        elif action is WatchAction.REBUILD:
            if rest:
                self.fail(anode, apath, f"rebuild takes no arguments, got {rest!r}")
            args = ()
        else:
            try:
                words = shlex.split(rest)
            except ValueError as e:
                self.fail(anode, apath, f"cannot split the action: {e}")
            want = {WatchAction.RESTART: 1, WatchAction.SIGNAL: 2, WatchAction.SYNC: 1}[action]
            usage = {
                WatchAction.RESTART: "restart SERVICE",
                WatchAction.SIGNAL: "signal SERVICE SIGNAL",
                WatchAction.SYNC: "sync DEST",
            }[action]
            if len(words) != want:
                self.fail(anode, apath, f"expected '{usage}', got {a!r}")
            if action is WatchAction.SYNC:
                args = (self.box_path(anode, apath, words[0]),)
            else:
                if words[0] not in services:
                    self.fail(
                        anode,
                        apath,
                        f"no service named {words[0]!r} in this box"
                        + _did_you_mean(words[0], list(services)),
                    )
                if action is WatchAction.SIGNAL:
                    sig = svconf.normalize_signal(words[1])
                    if sig is None:
                        self.fail(anode, apath, f"unknown signal {words[1]!r}")
                    args = (words[0], sig)
                else:
                    args = (words[0],)
        return WatchRule(path=wpath, action=action, args=args, include=include, ignore=ignore)
