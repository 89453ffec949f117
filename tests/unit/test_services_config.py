# ruff: noqa: E501  (tables of exact error messages read best one per line)
"""supervisord.conf rendering: golden output, escaping, and round trips through supervisor's own parser."""

from __future__ import annotations

import io
import random
import shlex
from dataclasses import replace
from pathlib import Path

import pytest
from supervisor.options import ServerOptions

from devbox import devboxfile
from devbox.errors import ConfigError
from devbox.model import Box, Service
from devbox.services import config


def box_from(text: str) -> Box:
    return devboxfile.loads(text, Path("/p/Devboxfile")).boxes["b"]


def parse(conf: str) -> dict:
    """What supervisord itself makes of `conf`: {program: (argv, env, directory, autostart, user)}."""
    opts = ServerOptions()
    opts.configfile = "/nonexistent"
    opts.read_config(io.StringIO(conf))
    out = {}
    for g in opts.configroot.supervisord.process_group_configs:
        (pc,) = g.process_configs
        out[g.name] = (shlex.split(pc.command), pc.environment or {}, pc.directory, pc.autostart, pc.uid)
    return out


GOLDEN = """\
[program:db]
command=mysqld --user=mysql
user=mysql
environment=A="1",B='say "hi" now'
autostart=true
autorestart=true
exitcodes=0,2
startsecs=5
startretries=3
stopsignal=INT
stopwaitsecs=30
priority=10
stopasgroup=true
killasgroup=true
redirect_stderr=false
stdout_logfile=/var/log/devbox/db.out.log
stdout_logfile_maxbytes=10MB
stdout_logfile_backups=3
stderr_logfile=/var/log/devbox/db.err.log
stderr_logfile_maxbytes=10MB
stderr_logfile_backups=3
stdout_events_enabled=true
stderr_events_enabled=true

[program:web]
command=python3 -m http.server 80
directory=/srv/app
autostart=false
autorestart=unexpected
exitcodes=0
startsecs=1
startretries=3
stopsignal=TERM
stopwaitsecs=10
priority=999
stopasgroup=true
killasgroup=true
redirect_stderr=false
stdout_logfile=/var/log/devbox/web.out.log
stdout_logfile_maxbytes=10MB
stdout_logfile_backups=3
stderr_logfile=/var/log/devbox/web.err.log
stderr_logfile_maxbytes=10MB
stderr_logfile_backups=3
stdout_events_enabled=true
stderr_events_enabled=true
"""

GOLDEN_LISTENER = """\
[eventlistener:_devbox_logs]
command=/usr/bin/python3 -I -S /run/devbox/logstamp.py /var/log/devbox 10485760
events=PROCESS_LOG
buffer_size=10000
priority=1
autostart=true
autorestart=true
startsecs=0
startretries=100
stdout_logfile=NONE
stderr_logfile=/var/log/devbox/_devbox_logs.err.log
stderr_logfile_maxbytes=1MB
stderr_logfile_backups=1
"""

GOLDEN_BOX = """
boxes:
  b:
    base: x
    services:
      web: {command: python3 -m http.server 80, directory: /srv/app, depends_on: [db]}
      db:
        command: mysqld --user=mysql
        user: mysql
        env: {A: 1, B: 'say "hi" now'}
        autorestart: true
        exitcodes: [0, 2]
        startsecs: 5
        stopsignal: SIGINT
        stopwaitsecs: 30
        priority: 10
"""


def test_golden() -> None:
    conf = config.render(box_from(GOLDEN_BOX))
    head, _, programs = conf.partition("\n[program:")
    assert "[program:" + programs == GOLDEN
    assert "[unix_http_server]\nfile=/run/devbox/supervisor.sock\nchmod=0700\n" in head
    assert "[supervisord]\nnodaemon=true\nuser=root\nlogfile=/var/log/devbox/supervisord.log\n" in head
    assert "pidfile=/run/devbox/supervisord.pid\nchildlogdir=/var/log/devbox\n" in head
    assert (
        "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        in head
    )
    assert "[supervisorctl]\nserverurl=unix:///run/devbox/supervisor.sock\n" in head
    assert head.endswith("\n" + GOLDEN_LISTENER)


def test_without_python_there_is_no_listener() -> None:
    conf = config.render(box_from(GOLDEN_BOX), python=None)
    assert "eventlistener" not in conf and "_devbox_logs" not in conf


def test_listener_source_is_the_shipped_script() -> None:
    src = config.listener_source()
    assert "def main(" in src and "import devbox" not in src and "from devbox" not in src


def test_render_parses_back(tmp_path: Path) -> None:
    box = box_from(GOLDEN_BOX)
    box = replace(box, services={**box.services, "db": replace(box.services["db"], user="root")})
    conf = config.render(box, f"{tmp_path}/s.sock", str(tmp_path), run_as=None)
    progs = parse(conf)
    assert list(progs) == ["_devbox_logs", "db", "web"]
    assert progs["_devbox_logs"][0] == ["/usr/bin/python3", "-I", "-S", f"{tmp_path}/logstamp.py", str(tmp_path), "10485760"]
    assert progs["web"] == (["python3", "-m", "http.server", "80"], {}, "/srv/app", False, None)
    assert progs["db"][4] == 0  # uid of root
    assert progs["db"][1] == {"A": "1", "B": 'say "hi" now'}


NASTY_ARGS = [
    "a ;b", "a;b", "a #b", "#", ";", " ; ", "it's", '"q"', "%(here)s", "100%", "%%", "", " ", "\t;x",
    "a\\b", "$HOME", "`id`", "[program:x]", "x=y", "ünïcödé", "a'b\"c", "\\;", "'", "\\",
]  # fmt: skip


@pytest.mark.parametrize("arg", NASTY_ARGS)
def test_command_quoting_round_trips(tmp_path: Path, arg: str) -> None:
    q = config.quote_arg(arg)
    assert shlex.split(q) == [arg]
    assert config.comment_problem(q) is None
    svc = Service(name="s", command=("prog", arg, "end"))
    box = Box(name="b", base="x", services={"s": svc})
    argv = parse(config.render(box, f"{tmp_path}/s.sock", str(tmp_path), run_as=None))["s"][0]
    assert argv == ["prog", arg, "end"]


def test_command_quoting_fuzz(tmp_path: Path) -> None:
    rnd = random.Random(1234)
    alphabet = "ab ;#%'\"\\\t=,:()[]$`é"
    argvs = [
        tuple("".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12))) for _ in range(4))
        for _ in range(200)
    ]
    services = {f"s{i}": Service(name=f"s{i}", command=("p", *a)) for i, a in enumerate(argvs)}
    box = Box(name="b", base="x", services=services)
    progs = parse(config.render(box, f"{tmp_path}/s.sock", str(tmp_path), run_as=None, python=None))
    assert sorted(progs) == sorted(services)
    for name, svc in services.items():
        assert tuple(progs[name][0]) == svc.command


def test_env_round_trips(tmp_path: Path) -> None:
    env = {
        "A": "x y",
        "B": "a,b=c",
        "C": "100%",
        "D": "%(ENV_HOME)s",
        "E": "it's",
        "F": 'say "hi" now',
        "G": "",
        "H": "#x;y",
    }
    box = Box(name="b", base="x", services={"s": Service(name="s", command=("p",), env=env)})
    assert parse(config.render(box, f"{tmp_path}/s.sock", str(tmp_path), run_as=None))["s"][1] == env


def test_escaped_directory_and_percent(tmp_path: Path) -> None:
    box = Box(
        name="b", base="x", services={"s": Service(name="s", command=("p",), directory="/srv/100%(here)s")}
    )
    conf = config.render(box, f"{tmp_path}/s.sock", str(tmp_path), run_as=None)
    assert "directory=/srv/100%%(here)s\n" in conf
    assert parse(conf)["s"][2] == "/srv/100%(here)s"


@pytest.mark.parametrize(
    ("svc", "message"),
    [
        (Service(name="s", command=("a\nb",)), "boxes -> b -> services -> s -> command[0]: must not contain a newline"),
        (Service(name="s", command=("a", "\x00")), "boxes -> b -> services -> s -> command[1]: must not contain a NUL byte"),
        (Service(name="s", command=("a",), env={"X": "1\n[program:e]"}), "boxes -> b -> services -> s -> env -> X: must not contain a newline"),
        (Service(name="s", command=("a",), env={"X": "a ;b"}), "boxes -> b -> services -> s -> env -> X: must not contain ' ;': supervisor reads it as the start of a comment"),
        (Service(name="s", command=("a",), env={"X": "a\"b'c"}), "boxes -> b -> services -> s -> env -> X: must not contain both ' and \" (supervisor's environment= has no escapes)"),
        (Service(name="s", command=("a",), env={"X=1,Y": "v"}), "boxes -> b -> services -> s -> env: invalid variable name 'X=1,Y'"),
        (Service(name="s", command=("a",), user="root\nx=1"), "boxes -> b -> services -> s -> user: invalid user name 'root\\nx=1'"),
        (Service(name="s", command=("a",), directory="/a #b"), "boxes -> b -> services -> s -> directory: must not contain ' #': supervisor reads it as the start of a comment"),
        (Service(name="s", command=("a",), directory="rel"), "boxes -> b -> services -> s -> directory: must be an absolute path without surrounding spaces, got 'rel'"),
        (Service(name="s", command=("a",), stopsignal="TERM\n"), "boxes -> b -> services -> s -> stopsignal: unknown signal 'TERM\\n'"),
        (Service(name="s", command=("a",), stopsignal="SIGTERM"), "boxes -> b -> services -> s -> stopsignal: unknown signal 'SIGTERM'"),
        (Service(name="s]\n[x", command=("a",)), "boxes -> b -> services -> s]\n[x: invalid service name 's]\\n[x'"),
        (Service(name="s", command=()), "boxes -> b -> services -> s -> command: must not be empty"),
        (Service(name="s", command=("a",), startsecs=-1), "boxes -> b -> services -> s -> startsecs: must be a non-negative integer, got -1"),
    ],
)  # fmt: skip
def test_render_rejects_hand_built_injection(svc: Service, message: str) -> None:
    """The renderer re-checks everything: a model not made by devboxfile.load cannot inject either."""
    with pytest.raises(ConfigError) as ei:
        config.render(Box(name="b", base="x", services={svc.name: svc}))
    assert ei.value.message == message


def test_render_rejects_bad_paths() -> None:
    box = Box(name="b", base="x")
    with pytest.raises(ConfigError, match="supervisor socket path: must not contain a newline"):
        config.render(box, sock_path="/run/x\n[program:y]")
    with pytest.raises(ConfigError, match="supervisor log dir: must be an absolute path"):
        config.render(box, log_dir="logs")
    assert "user=root" not in config.render(box, run_as=None)


def test_dependent_services_do_not_autostart() -> None:
    box = box_from(GOLDEN_BOX)
    conf = config.render(box)
    assert "[program:web]\n" in conf and conf.index("[program:db]") < conf.index("[program:web]")
    no_auto = replace(box.services["db"], autostart=False)
    conf = config.render(replace(box, services={"db": no_auto}))
    assert "autostart=false" in conf


def test_signals_and_users() -> None:
    assert config.normalize_signal("sighup") == "HUP"
    assert config.normalize_signal("USR1") == "USR1"
    assert config.normalize_signal("NOPE") is None
    for ok in ["root", "www-data", "_apt", "1000", "tomcat10", "user$"]:
        assert config.USER_RE.fullmatch(ok), ok
    for bad in ["Root", "a b", "a:b", "-x", "%(x)s", "a\nb", ""]:
        assert not config.USER_RE.fullmatch(bad), bad


def test_supervisord_command() -> None:
    assert config.supervisord_command("/run/devbox/supervisord.conf") == [
        "/usr/bin/supervisord", "-n", "-c", "/run/devbox/supervisord.conf",
    ]  # fmt: skip
