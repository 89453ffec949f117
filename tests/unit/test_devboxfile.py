# ruff: noqa: E501  (tables of exact error messages read best one per line)
"""Devboxfile -> model: every validation error class with its exact message and line number."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from devbox import devboxfile
from devbox.errors import ConfigError
from devbox.model import AutoRestart, BuildStep, Health, Mount, Port, Proto, StepKind, WatchAction


@pytest.fixture
def proj(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "My Shop"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


def load(proj: Path, text: str):
    f = proj / "Devboxfile"
    f.write_text(textwrap.dedent(text).lstrip("\n"))
    return devboxfile.load(f)


def error(proj: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        load(proj, text)
    return ei.value


FULL = """
name: shop
network: {subnet: 10.89.3.0/24}
x-common: &common
  base: debian:bookworm
boxes:
  legacy:
    <<: *common
    packages: [openjdk-17-jre-headless, tomcat10]
    build:
      - run: echo "JAVA_OPTS=-Xmx256m" >> /etc/default/tomcat10
      - {copy: ./conf/server.xml, to: /etc/tomcat10/server.xml}
      - env: {A: 1}
      - workdir: /srv
      - user: tomcat
      - [make, -C, /srv]
    mounts: ["./legacy:/srv/app", {source: ./data, target: /data, readonly: true}, "./ro:/ro:ro"]
    env: {APP_ENV: dev, VERSION: 1.10, DEBUG: yes, PORTS: 8080:80}
    ports: ["8080:8080", 9000, "127.0.0.2:9001:91", "5353:53/udp", "[::1]:7000:70", {host: 81, box: 80}]
    resources: {memory: 512m, cpus: 1.5, pids: 512}
    depends_on: [db]
    user: tomcat
    workdir: /srv/app
    services:
      tomcat:
        command: /usr/share/tomcat10/bin/catalina.sh run
        health: {tcp: 8080, interval: 500ms, start_period: 2m}
      sidecar:
        command: [sleep, infinity]
        user: root
        directory: /
        depends_on: [tomcat]
        autorestart: true
        stopsignal: sigint
        health: {http: "8080/health"}
    watch:
      - {path: ./legacy/src, action: restart tomcat, include: ["*.java"], ignore: [target]}
      - {path: ./legacy/conf, action: signal tomcat hup}
      - {path: ./legacy/web, action: exec make -C /srv/app}
      - {path: ./static, action: sync /srv/static}
      - {path: ./Dockerfile, action: rebuild}
  db:
    base: debian:bookworm
    services: {mariadb: mysqld}
"""


def test_full_example(proj: Path) -> None:
    p = load(proj, FULL)
    assert p.name == "shop" and p.root == proj and p.file == proj / "Devboxfile"
    assert p.subnet == "10.89.3.0/24"
    assert list(p.boxes) == ["legacy", "db"]
    assert p.box_order() == ["db", "legacy"]
    b = p.boxes["legacy"]
    assert b.base == "debian:bookworm" and b.hostname == "legacy"
    assert b.build == (
        BuildStep(
            StepKind.RUN, command=("/bin/sh", "-c", 'echo "JAVA_OPTS=-Xmx256m" >> /etc/default/tomcat10')
        ),
        BuildStep(StepKind.COPY, source=proj / "conf/server.xml", target="/etc/tomcat10/server.xml"),
        BuildStep(StepKind.ENV, env={"A": "1"}),
        BuildStep(StepKind.WORKDIR, target="/srv"),
        BuildStep(StepKind.USER, user="tomcat"),
        BuildStep(StepKind.RUN, command=("make", "-C", "/srv")),
    )
    assert b.mounts == (
        Mount(proj / "legacy", "/srv/app"), Mount(proj / "data", "/data", True), Mount(proj / "ro", "/ro", True),
    )  # fmt: skip
    # env values are taken as written: no YAML 1.1 float/bool/base-60 surprises
    assert b.env == {"APP_ENV": "dev", "VERSION": "1.10", "DEBUG": "yes", "PORTS": "8080:80"}
    assert b.ports == (
        Port(8080, 8080), Port(9000, 9000), Port(9001, 91, "127.0.0.2"), Port(5353, 53, proto=Proto.UDP),
        Port(7000, 70, "::1"), Port(81, 80),
    )  # fmt: skip
    assert str(b.ports[4]) == "[::1]:7000->70/tcp"
    assert (b.resources.memory, b.resources.cpus, b.resources.pids) == (512 << 20, 1.5, 512)
    t, s = b.services["tomcat"], b.services["sidecar"]
    assert t.command == ("/usr/share/tomcat10/bin/catalina.sh", "run")
    assert t.user == "tomcat" and t.directory == "/srv/app"  # box defaults
    assert t.health == Health(tcp=8080, interval=0.5, start_period=120.0)
    assert s.user == "root" and s.directory == "/" and s.autorestart is AutoRestart.TRUE
    assert s.stopsignal == "INT" and s.health == Health(http="http://localhost:8080/health")
    assert s.starts_later and not t.starts_later
    assert b.service_order() == ["tomcat", "sidecar"]
    w = b.watch
    assert (w[0].action, w[0].args, w[0].include, w[0].ignore) == (
        WatchAction.RESTART,
        ("tomcat",),
        ("*.java",),
        ("target",),
    )
    assert w[0].path == proj / "legacy/src"
    assert (w[1].action, w[1].args) == (WatchAction.SIGNAL, ("tomcat", "HUP"))
    assert (w[2].action, w[2].args) == (WatchAction.EXEC, ("/bin/sh", "-c", "make -C /srv/app"))
    assert (w[3].action, w[3].args) == (WatchAction.SYNC, ("/srv/static",))
    assert (w[4].action, w[4].args) == (WatchAction.REBUILD, ())
    assert p.boxes["db"].services["mariadb"].command == ("mysqld",)


def test_defaults(proj: Path) -> None:
    p = load(proj, "boxes: {my_box: {base: debian:bookworm}}")
    assert p.name == "my-shop"  # from the folder name
    b = p.boxes["my_box"]
    assert b.hostname == "my-box" and b.services == {} and b.ports == () and b.user is None


def test_find_walks_up(proj: Path) -> None:
    (proj / "Devboxfile").write_text("boxes: {a: {base: x}}")
    sub = proj / "a" / "b"
    sub.mkdir(parents=True)
    assert devboxfile.find(sub) == proj / "Devboxfile"
    with pytest.raises(ConfigError, match="no Devboxfile in /"):
        devboxfile.find(Path("/"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # unknown keys, with a suggestion
        ("boxes:\n  web:\n    base: x\n    prots: [80]\n",
         "Devboxfile:4 boxes -> web -> prots: unknown key (did you mean 'ports'?)"),
        ("name: a\nboxs: {}\n", "Devboxfile:2 boxs: unknown key (did you mean 'boxes'?)"),
        ("boxes:\n  web:\n    base: x\n    services:\n      s: {command: x, helth: {tcp: 1}}\n",
         "Devboxfile:5 boxes -> web -> services -> s -> helth: unknown key (did you mean 'health'?)"),
        ("boxes:\n  web:\n    base: x\n    zzz: 1\n", "Devboxfile:4 boxes -> web -> zzz: unknown key"),
        # structure
        ("", "Devboxfile:1: the file is empty"),
        ("boxes: [a]\n", "Devboxfile:1 boxes: expected a mapping of box names, got a list"),
        ("name: x\n", "Devboxfile:1: missing key 'boxes'"),
        ("boxes: {}\n", "Devboxfile:1 boxes: no boxes defined"),
        ("boxes:\n  web: {}\n", "Devboxfile:2 boxes -> web: missing key 'base'"),
        ("boxes:\n  web:\n    base: x\n    base: y\n",
         "Devboxfile:4 boxes -> web -> base: duplicate key (first set on line 3)"),
        ("boxes:\n  web:\n    base: [x]\n",
         "Devboxfile:3 boxes -> web -> base: expected an image reference, got a list"),
        ("boxes: {a: {base: x}\n", "Devboxfile:2: invalid YAML: expected ',' or '}', but got '<stream end>'"),
        # names
        ("boxes:\n  Web: {base: x}\n", "Devboxfile:2 boxes -> Web: invalid box name 'Web'"),
        ("boxes:\n  " + "a" * 41 + ": {base: x}\n", "Devboxfile:2 boxes -> " + "a" * 41 + ": invalid box name '" + "a" * 41 + "'"),
        ("name: -x\nboxes: {a: {base: x}}\n", "Devboxfile:1 name: invalid project name '-x'"),
        ("boxes:\n  a:\n    base: x\n    services:\n      'my svc': {command: x}\n",
         "Devboxfile:5 boxes -> a -> services -> my svc: invalid service name 'my svc'"),
        # ports
        ("boxes:\n  web:\n    base: x\n    ports: ['80:80:80']\n",
         "Devboxfile:4 boxes -> web -> ports[0]: expected an IP address to publish on, got '80'"),
        ("boxes:\n  web:\n    base: x\n    ports:\n      - 80:80\n      - 1:2:3:4\n",
         "Devboxfile:6 boxes -> web -> ports[1]: expected HOST:BOX, got '1:2:3:4'"),
        ("boxes:\n  web:\n    base: x\n    ports: ['0:80']\n",
         "Devboxfile:4 boxes -> web -> ports[0]: ports are 1-65535, got '0:80'"),
        ("boxes:\n  web:\n    base: x\n    ports: [70000]\n",
         "Devboxfile:4 boxes -> web -> ports[0]: ports are 1-65535, got '70000'"),
        ("boxes:\n  web:\n    base: x\n    ports: ['80:80/sctp']\n",
         "Devboxfile:4 boxes -> web -> ports[0]: expected tcp or udp after '/', got '80:80/sctp'"),
        ("boxes:\n  web:\n    base: x\n    ports: [{host: 80}]\n",
         "Devboxfile:4 boxes -> web -> ports[0]: missing key 'box' (the port inside the box)"),
        ("boxes:\n  a: {base: x, ports: [8080]}\n  b: {base: x, ports: ['8080:80']}\n",
         "Devboxfile:3 boxes -> b -> ports[0]: host port 127.0.0.1:8080/tcp is already published by boxes -> a -> ports[0]"),
        ("boxes:\n  a:\n    base: x\n    ports: ['0.0.0.0:80:80', '127.0.0.1:81:80', '127.0.0.1:80:81']\n",
         "Devboxfile:4 boxes -> a -> ports[2]: host port 127.0.0.1:80/tcp is already published by boxes -> a -> ports[0]"),
        # dependencies
        ("boxes:\n  a: {base: x, depends_on: [dbb]}\n  db: {base: x}\n",
         "Devboxfile:2 boxes -> a -> depends_on[0]: no box named 'dbb' (did you mean 'db'?)"),
        ("boxes:\n  a:\n    base: x\n    depends_on: [b]\n  b:\n    base: x\n    depends_on: [c]\n  c:\n    base: x\n    depends_on: [a]\n",
         "Devboxfile:4 boxes -> a -> depends_on: box dependency cycle: a -> b -> c -> a"),
        ("boxes:\n  a: {base: x, depends_on: [a]}\n",
         "Devboxfile:2 boxes -> a -> depends_on[0]: box 'a' cannot depend on itself"),
        ("boxes:\n  a:\n    base: x\n    services:\n      s: {command: x, depends_on: [t]}\n      t: {command: x, depends_on: [s]}\n",
         "Devboxfile:5 boxes -> a -> services -> s -> depends_on: service dependency cycle: s -> t -> s"),
        ("boxes:\n  a:\n    base: x\n    services:\n      s: {command: x, depends_on: [web]}\n",
         "Devboxfile:5 boxes -> a -> services -> s -> depends_on[0]: no service named 'web'"),
        # resources
        ("boxes:\n  a:\n    base: x\n    resources: {memory: lots}\n",
         "Devboxfile:4 boxes -> a -> resources -> memory: invalid memory value 'lots'"),
        ("boxes:\n  a:\n    base: x\n    resources: {memory: 1m}\n",
         "Devboxfile:4 boxes -> a -> resources -> memory: invalid memory value '1m': the minimum is 6m"),
        ("boxes:\n  a:\n    base: x\n    resources: {cpus: 0}\n",
         "Devboxfile:4 boxes -> a -> resources -> cpus: invalid cpus value '0': the minimum is 0.01"),
        ("boxes:\n  a:\n    base: x\n    resources: {pids: many}\n",
         "Devboxfile:4 boxes -> a -> resources -> pids: invalid pids value 'many'"),
        # mounts
        ("boxes:\n  a:\n    base: x\n    mounts: ['../other:/srv']\n",
         "Devboxfile:4 boxes -> a -> mounts[0]: {parent}/other is outside the project folder {proj}"),
        ("boxes:\n  a:\n    base: x\n    mounts: ['./src:srv']\n",
         "Devboxfile:4 boxes -> a -> mounts[0]: expected an absolute path in the box, got 'srv'"),
        ("boxes:\n  a:\n    base: x\n    mounts: ['./src']\n",
         "Devboxfile:4 boxes -> a -> mounts[0]: expected SOURCE:TARGET or SOURCE:TARGET:ro, got './src'"),
        ("boxes:\n  a:\n    base: x\n    mounts: ['./a:/x', './b:/x/']\n",
         "Devboxfile:4 boxes -> a -> mounts[1]: /x is already mounted by mounts[0]"),
        ("boxes:\n  a:\n    base: x\n    mounts: ['./a:/']\n",
         "Devboxfile:4 boxes -> a -> mounts[0]: cannot mount over / of the box"),
        # env
        ("boxes:\n  a:\n    base: x\n    env: {1A: x}\n", "Devboxfile:4 boxes -> a -> env -> 1A: invalid variable name '1A'"),
        ("boxes:\n  a:\n    base: x\n    env: {A: }\n",
         "Devboxfile:4 boxes -> a -> env -> A: expected a string, number or boolean, got nothing (null)"),
        ("boxes:\n  a:\n    base: x\n    env: {A: [1]}\n",
         "Devboxfile:4 boxes -> a -> env -> A: expected a string, number or boolean, got a list"),
        # services
        ("boxes:\n  a:\n    base: x\n    services:\n      s: {user: x}\n",
         "Devboxfile:5 boxes -> a -> services -> s: missing key 'command'"),
        ("boxes:\n  a:\n    base: x\n    services:\n      s: {command: \"sh -c 'x\"}\n",
         "Devboxfile:5 boxes -> a -> services -> s -> command: cannot split the command: No closing quotation"),
        ("boxes:\n  a:\n    base: x\n    services:\n      s: {command: x, stopsignal: TREM}\n",
         "Devboxfile:5 boxes -> a -> services -> s -> stopsignal: unknown signal 'TREM' (did you mean 'TERM'?)"),
        ("boxes:\n  a:\n    base: x\n    services:\n      s: {command: x, autorestart: maybe}\n",
         "Devboxfile:5 boxes -> a -> services -> s -> autorestart: expected true, false or unexpected, got a string 'maybe'"),
        ("boxes:\n  a:\n    base: x\n    services:\n      s: {command: x, startsecs: -1}\n",
         "Devboxfile:5 boxes -> a -> services -> s -> startsecs: must be between 0 and 3600, got -1"),
        ("boxes:\n  a:\n    base: x\n    services:\n      s: {command: x, health: {tcp: 1, command: y}}\n",
         "Devboxfile:5 boxes -> a -> services -> s -> health: a health check needs exactly one of tcp, http, command, got tcp, command"),
        ("boxes:\n  a:\n    base: x\n    services:\n      s: {command: x, health: {http: 'https://x/'}}\n",
         "Devboxfile:5 boxes -> a -> services -> s -> health -> http: expected PORT, PORT/PATH or http://localhost:PORT/PATH, got 'https://x/'"),
        ("boxes:\n  a:\n    base: x\n    services:\n      s: {command: x, health: {tcp: 1, interval: soon}}\n",
         "Devboxfile:5 boxes -> a -> services -> s -> health -> interval: expected a duration like 500ms, 2s or 1m, got 'soon'"),
        # build
        ("boxes:\n  a:\n    base: x\n    build:\n      - {copy: ./x}\n",
         "Devboxfile:5 boxes -> a -> build[0]: a copy step needs 'to' (the destination in the image)"),
        ("boxes:\n  a:\n    base: x\n    build:\n      - {run: x, user: y}\n",
         "Devboxfile:5 boxes -> a -> build[0]: a build step needs exactly one of run, copy, env, workdir, user, got run, user"),
        ("boxes:\n  a:\n    base: x\n    build:\n      - {rnu: x}\n",
         "Devboxfile:5 boxes -> a -> build[0] -> rnu: unknown key (did you mean 'run'?)"),
        # watch
        ("boxes:\n  a:\n    base: x\n    watch:\n      - {path: ., action: restart web}\n",
         "Devboxfile:5 boxes -> a -> watch[0] -> action: no service named 'web' in this box"),
        ("boxes:\n  a:\n    base: x\n    watch:\n      - {path: ., action: reload}\n",
         "Devboxfile:5 boxes -> a -> watch[0] -> action: unknown action 'reload' (did you mean 'rebuild'?)"),
        ("boxes:\n  a:\n    base: x\n    watch:\n      - {path: ., action: sync}\n",
         "Devboxfile:5 boxes -> a -> watch[0] -> action: expected 'sync DEST', got 'sync'"),
        # network
        ("network: {subnet: 8.8.8.0/24}\nboxes: {a: {base: x}}\n",
         "Devboxfile:1 network -> subnet: expected a private IPv4 subnet from /16 to /29, got '8.8.8.0/24'"),
    ],
)  # fmt: skip
def test_errors(proj: Path, text: str, message: str) -> None:
    e = error(proj, text)
    assert e.message == message.replace("{proj}", str(proj)).replace("{parent}", str(proj.parent))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # line breaks and NUL in values that reach supervisord.conf
        ('boxes:\n  a:\n    base: x\n    services:\n      s: {command: "sleep 1\\n[program:evil]\\ncommand=x"}\n',
         "Devboxfile:5 boxes -> a -> services -> s -> command: must not contain a newline"),
        ('boxes:\n  a:\n    base: x\n    services:\n      s: {command: [sleep, "1\\rx"]}\n',
         "Devboxfile:5 boxes -> a -> services -> s -> command[1]: must not contain a carriage return"),
        ('boxes:\n  a:\n    base: x\n    services:\n      s: {command: x, env: {A: "a\\0b"}}\n',
         "Devboxfile:5 boxes -> a -> services -> s -> env -> A: must not contain a NUL byte"),
        ('boxes:\n  a:\n    base: x\n    services:\n      s: {command: x, env: {A: "1 ;x"}}\n',
         "Devboxfile:5 boxes -> a -> services -> s -> env -> A: must not contain ' ;': supervisor reads it as the start of a comment"),
        ("boxes:\n  a:\n    base: x\n    services:\n      s: {command: x, env: {A: '\"q\"'}}\n",
         "Devboxfile:5 boxes -> a -> services -> s -> env -> A: must not start or end with a quote (supervisor strips it)"),
        ("boxes:\n  a:\n    base: x\n    services:\n      s: {command: x, user: 'root\\nuser=x'}\n",
         "Devboxfile:5 boxes -> a -> services -> s -> user: invalid user name 'root\\\\nuser=x'"),
        ('boxes:\n  a:\n    base: x\n    services:\n      s: {command: x, user: "root,x"}\n',
         "Devboxfile:5 boxes -> a -> services -> s -> user: invalid user name 'root,x'"),
        ('boxes:\n  a:\n    base: x\n    services:\n      s: {command: x, directory: "/srv\\n[program:e]"}\n',
         "Devboxfile:5 boxes -> a -> services -> s -> directory: must not contain a newline"),
        ('boxes:\n  a:\n    base: x\n    services:\n      s: {command: x, directory: "/srv ;x"}\n',
         "Devboxfile:5 boxes -> a -> services -> s -> directory: must not contain ' ;': supervisor reads it as the start of a comment"),
        ('boxes:\n  a:\n    base: x\n    services:\n      s: {command: x, stopsignal: "TERM\\nx"}\n',
         "Devboxfile:5 boxes -> a -> services -> s -> stopsignal: unknown signal 'TERM\\nx' (did you mean 'TERM'?)"),
    ],
)  # fmt: skip
def test_injection_rejected(proj: Path, text: str, message: str) -> None:
    assert error(proj, text).message == message


def test_error_names_file_relative_to_cwd(proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(proj.parent)
    e = error(proj, "boxes: {a: {bse: x}}")
    assert e.message == "My Shop/Devboxfile:1 boxes -> a -> bse: unknown key (did you mean 'base'?)"
    assert e.hint is not None and e.hint.startswith("allowed here: base, packages")


def test_mount_outside_with_opt_in(proj: Path) -> None:
    b = load(
        proj, "boxes:\n  a:\n    base: x\n    mounts: [{source: /etc, target: /h, allow_outside: true}]\n"
    )
    assert b.boxes["a"].mounts == (Mount(Path("/etc"), "/h"),)
    b = load(proj, "allow_outside: true\nboxes:\n  a:\n    base: x\n    mounts: ['/etc:/h:ro']\n")
    assert b.boxes["a"].mounts == (Mount(Path("/etc"), "/h", True),)
    e = error(proj, "boxes:\n  a:\n    base: x\n    mounts: ['/etc:/h']\n")
    assert "allow_outside: true" in (e.hint or "")


def test_hashes_stable_and_sensitive(proj: Path) -> None:
    base = "boxes:\n  a:\n    base: debian:bookworm\n    env: {A: '1', B: '2'}\n    services:\n      s: {command: sleep 1}\n"
    a1 = load(proj, base).boxes["a"]
    a2 = load(proj, base).boxes["a"]
    assert a1.config_hash() == a2.config_hash() == a1.fingerprint()
    assert a1.services_hash() == a2.services_hash()
    assert len(a1.config_hash()) == 64
    # env order does not matter
    assert (
        load(proj, base.replace("{A: '1', B: '2'}", "{B: '2', A: '1'}")).boxes["a"].config_hash()
        == a1.config_hash()
    )
    # box-level changes: recreate, not a services reload
    for old, new in [("debian:bookworm", "debian:trixie"), ("A: '1'", "A: '3'")]:
        b = load(proj, base.replace(old, new)).boxes["a"]
        assert b.config_hash() != a1.config_hash() and b.services_hash() == a1.services_hash()
    for extra in ["    ports: [80]\n", "    resources: {memory: 1g}\n", "    hostname: other\n",
                  "    mounts: ['./x:/x']\n", "    packages: [vim]\n", "    build: [{run: x}]\n"]:  # fmt: skip
        b = load(proj, base + extra).boxes["a"]
        assert b.config_hash() != a1.config_hash(), extra
    b = load(proj, base + "    packages: [vim]\n").boxes["a"]
    assert b.image_hash() != a1.image_hash()
    b = load(proj, base + "    ports: [80]\n").boxes["a"]
    assert b.image_hash() == a1.image_hash()
    # service-level changes: reload only
    for old, new in [("sleep 1", "sleep 2")]:
        b = load(proj, base.replace(old, new)).boxes["a"]
        assert b.config_hash() == a1.config_hash() and b.services_hash() != a1.services_hash()
    b = load(proj, base + "    depends_on: []\n    watch: [{path: ., action: restart s}]\n").boxes["a"]
    assert b.config_hash() == a1.config_hash() and b.services_hash() == a1.services_hash()


def test_templates_render_and_load(proj: Path) -> None:
    for name in devboxfile.TEMPLATES:
        text = devboxfile.render_template(name, "My Shop")
        assert text.startswith("# Devboxfile for my-shop")
        p = devboxfile.loads(text, proj / "Devboxfile")
        assert p.name == "my-shop" and p.boxes
    with pytest.raises(ConfigError, match=r"unknown template 'pyhton' \(did you mean 'python'\?\)"):
        devboxfile.render_template("pyhton", "x")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("512m", 512 << 20), ("1g", 1 << 30), ("1.5GiB", 3 << 29), ("8192k", 8 << 20), (8 << 20, 8 << 20), ("64MB", 64 << 20)],
)  # fmt: skip
def test_parse_memory(value: str | int, expected: int) -> None:
    assert devboxfile.parse_memory(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [("500ms", 0.5), ("2s", 2.0), ("1m", 60.0), (3, 3.0), ("0.25", 0.25)]
)
def test_parse_duration(value: str | float, expected: float) -> None:
    assert devboxfile.parse_duration(value) == expected
