"""Render a box's supervisord.conf from its model. Pure: model in, text out.

How supervisor reads its config, and what that means for anything copied from a Devboxfile
(verified against supervisor 4.3, `options.py` and `datatypes.py`):

1. The file is parsed by RawConfigParser with inline_comment_prefixes (";", "#"): a ";" or "#" that
   follows whitespace ends the value. A line break starts a new key or section. So: no value may
   contain a line break or another control character (rejected), and no ";"/"#" may follow
   whitespace (commands are quoted so that it never happens; other values are rejected).
2. Every value is then %-interpolated (`%(here)s`, `%(ENV_HOME)s`...), so "%" is written "%%".
3. `command` is split with shlex.split (POSIX rules, no shell). devbox keeps commands as argv and
   writes each argument back quoted so that 1. and 2. hold and shlex.split gives the same argv.
4. `environment` is split with a non-POSIX shlex: a value is a quoted token with no escapes, and its
   leading/trailing quote characters are stripped. A value is written "..." (or '...' when it holds a
   double quote); values that cannot survive that (holding both quote kinds, or starting/ending with
   one) are rejected with a hint.

The same checks (`value_problem`, `env_value_problem`, ...) are used by devbox.devboxfile to report
errors with a line number; `render` runs them again, so a hand-built model cannot inject config either.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import signal
from importlib import resources
from string import Template

from devbox.errors import ConfigError
from devbox.model import NAME_MAX, NAME_RE, AutoRestart, Box, Service

SUPERVISORD = "/usr/bin/supervisord"  # Debian's `supervisor` package installs it here
DEFAULT_SOCK = "/run/devbox/supervisor.sock"
DEFAULT_LOG_DIR = "/var/log/devbox"
LOG_MAXBYTES = "10MB"
LOG_BACKUPS = 3
# The event listener that writes timestamped copies of the program logs (NAME.ts.log, for
# `devbox logs --since`): devbox/services/logstamp.py, written next to the socket by the orchestrator
# and run by the box's python3 (the one supervisord itself runs on).
LISTENER = "_devbox_logs"
LISTENER_SCRIPT = "logstamp.py"
PYTHON = "/usr/bin/python3"
TS_LOG_MAXBYTES = 10 * 1024 * 1024

# Signals supervisor accepts for stopsignal / signalProcess, without the SIG prefix.
SIGNALS: frozenset[str] = frozenset(
    s.name[3:] for s in signal.Signals if s.name not in ("SIGRTMIN", "SIGRTMAX")
)
USER_RE = re.compile(r"(?:[a-z_][a-z0-9_.-]{0,31}\$?|[0-9]{1,10})")
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SAFE_ARG = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
# Characters that end a line for configparser or for str.splitlines, and other C0 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


def _char_name(ch: str) -> str:
    return {"\n": "a newline", "\r": "a carriage return", "\x00": "a NUL byte"}.get(
        ch, f"control character {ch!r}"
    )


def value_problem(value: str) -> str | None:
    """Why `value` cannot go into supervisord.conf at all (line breaks, NUL, controls), else None."""
    m = _CONTROL.search(value)
    if m:
        return f"must not contain {_char_name(m.group())}"
    return None


def comment_problem(value: str) -> str | None:
    """Why `value` would be cut by supervisor's inline comments (" ;" or " #"), else None."""
    for i, ch in enumerate(value):
        if ch in ";#" and i > 0 and value[i - 1].isspace():
            return (
                f"must not contain {value[i - 1 : i + 1]!r}: supervisor reads it as the start of a comment"
            )
    return None


def env_value_problem(value: str) -> str | None:
    """Why `value` cannot be written in a program's `environment=`, else None."""
    p = value_problem(value) or comment_problem(value)
    if p:
        return p
    if '"' in value and "'" in value:
        return "must not contain both ' and \" (supervisor's environment= has no escapes)"
    if value[:1] in ("'", '"') or value[-1:] in ("'", '"'):
        return "must not start or end with a quote (supervisor strips it)"
    return None


def normalize_signal(name: str) -> str | None:
    """ "hup", "SIGHUP", "HUP" -> "HUP"; None when it is not a signal supervisor knows."""
    n = name.strip().upper()
    n = n[3:] if n.startswith("SIG") else n
    return n if n in SIGNALS else None


def quote_arg(arg: str) -> str:
    """Quote one argument for supervisor's `command=` (before %-escaping).

    shlex.split(quote_arg(a)) == [a], and the result never has ";" or "#" right after whitespace:
    runs of ordinary characters go in single quotes, and ";", "#" and "'" are backslash-escaped
    outside the quotes (a backslash is not whitespace, so configparser keeps the rest of the line).
    """
    if _SAFE_ARG.fullmatch(arg):
        return arg
    out: list[str] = []
    buf: list[str] = []
    for ch in arg:
        if ch in ";#'":
            if buf:
                out.append("'" + "".join(buf) + "'")
                buf = []
            out.append("\\" + ch)
        else:
            buf.append(ch)
    if buf:
        out.append("'" + "".join(buf) + "'")
    return "".join(out) or "''"


def quote_command(argv: tuple[str, ...] | list[str]) -> str:
    return " ".join(quote_arg(a) for a in argv)


def ini(value: str) -> str:
    """Escape supervisor's %-interpolation."""
    return value.replace("%", "%%")


def render_environment(env: dict[str, str], where: str = "env") -> str:
    parts = []
    for k, v in env.items():
        if not ENV_KEY_RE.fullmatch(k):
            raise ConfigError(f"{where}: invalid variable name {k!r}")
        p = env_value_problem(v)
        if p:
            raise ConfigError(f"{where} -> {k}: {p}")
        q = "'" if '"' in v else '"'
        parts.append(f"{k}={q}{ini(v)}{q}")
    return ",".join(parts)


def check_path(value: str, where: str) -> None:
    p = value_problem(value) or comment_problem(value)
    if p is None and (not value.startswith("/") or value != value.strip()):
        p = f"must be an absolute path without surrounding spaces, got {value!r}"
    if p:
        raise ConfigError(f"{where}: {p}")


def _program(box: Box, svc: Service, log_dir: str) -> str:
    where = f"boxes -> {box.name} -> services -> {svc.name}"
    if not NAME_RE.fullmatch(svc.name) or len(svc.name) > NAME_MAX:
        raise ConfigError(f"{where}: invalid service name {svc.name!r}")
    if not svc.command:
        raise ConfigError(f"{where} -> command: must not be empty")
    for i, arg in enumerate(svc.command):
        p = value_problem(arg)
        if p:
            raise ConfigError(f"{where} -> command[{i}]: {p}")
    if svc.user is not None and not USER_RE.fullmatch(svc.user):
        raise ConfigError(f"{where} -> user: invalid user name {svc.user!r}")
    if normalize_signal(svc.stopsignal) != svc.stopsignal:
        raise ConfigError(f"{where} -> stopsignal: unknown signal {svc.stopsignal!r}")
    if svc.directory is not None:
        check_path(svc.directory, f"{where} -> directory")
    ints = {
        "startsecs": svc.startsecs, "startretries": svc.startretries,
        "stopwaitsecs": svc.stopwaitsecs, "priority": svc.priority,
    }  # fmt: skip
    for key, val in ints.items():
        if not isinstance(val, int) or isinstance(val, bool) or val < 0:
            raise ConfigError(f"{where} -> {key}: must be a non-negative integer, got {val!r}")
    for code in svc.exitcodes:
        if not isinstance(code, int) or not 0 <= code <= 255:
            raise ConfigError(f"{where} -> exitcodes: must be integers 0-255, got {code!r}")
    autorestart = AutoRestart(svc.autorestart)

    lines = [
        f"[program:{svc.name}]",
        f"command={ini(quote_command(svc.command))}",
    ]
    if svc.user is not None:
        lines.append(f"user={svc.user}")
    if svc.directory is not None:
        lines.append(f"directory={ini(svc.directory)}")
    if svc.env:
        lines.append(f"environment={render_environment(svc.env, where + ' -> env')}")
    lines += [
        f"autostart={'false' if svc.starts_later else 'true'}",
        f"autorestart={autorestart}",
        f"exitcodes={','.join(str(c) for c in svc.exitcodes) or '0'}",
        f"startsecs={svc.startsecs}",
        f"startretries={svc.startretries}",
        f"stopsignal={svc.stopsignal}",
        f"stopwaitsecs={svc.stopwaitsecs}",
        f"priority={svc.priority}",
        "stopasgroup=true",
        "killasgroup=true",
        "redirect_stderr=false",
        f"stdout_logfile={log_dir}/{svc.name}.out.log",
        f"stdout_logfile_maxbytes={LOG_MAXBYTES}",
        f"stdout_logfile_backups={LOG_BACKUPS}",
        f"stderr_logfile={log_dir}/{svc.name}.err.log",
        f"stderr_logfile_maxbytes={LOG_MAXBYTES}",
        f"stderr_logfile_backups={LOG_BACKUPS}",
        "stdout_events_enabled=true",
        "stderr_events_enabled=true",
    ]
    return "\n".join(lines) + "\n"


def _listener(script: str, python: str, log_dir: str) -> str:
    """The `_devbox_logs` event listener (see logstamp.py). It starts first (priority 1) and stops
    last, with startsecs=0 so supervisord never waits for it; events that arrive before it is ready
    wait in its buffer."""
    check_path(script, "log listener script")
    check_path(python, "log listener python")
    argv = [python, "-I", "-S", script, log_dir, str(TS_LOG_MAXBYTES)]
    return "\n".join([
        f"[eventlistener:{LISTENER}]",
        f"command={ini(quote_command(argv))}",
        "events=PROCESS_LOG",
        "buffer_size=10000",
        "priority=1",
        "autostart=true",
        "autorestart=true",
        "startsecs=0",
        "startretries=100",
        "stdout_logfile=NONE",
        f"stderr_logfile={ini(log_dir)}/{LISTENER}.err.log",
        "stderr_logfile_maxbytes=1MB",
        "stderr_logfile_backups=1",
    ]) + "\n"  # fmt: skip


def render(
    box: Box,
    sock_path: str = DEFAULT_SOCK,
    log_dir: str = DEFAULT_LOG_DIR,
    run_as: str | None = "root",
    python: str | None = PYTHON,
) -> str:
    """supervisord.conf for `box`: the socket at `sock_path`, logs under `log_dir` (paths in the box).

    `run_as` is supervisord's own `user=`: "root" (the default) states that running as root is
    intended, which silences supervisord's CRIT warning; None omits it (a non-root supervisord, as in
    tests). With `python` (the box's python3; None leaves it out), supervisord also runs the
    `_devbox_logs` event listener, LISTENER_SCRIPT in the socket's folder, which writes LOG_DIR/NAME.ts.log.
    Raises ConfigError naming the field when a value cannot be written safely.
    """
    check_path(sock_path, "supervisor socket path")
    check_path(log_dir, "supervisor log dir")
    if run_as is not None and not USER_RE.fullmatch(run_as):
        raise ConfigError(f"supervisord user: invalid user name {run_as!r}")
    if not NAME_RE.fullmatch(box.name):
        raise ConfigError(f"boxes -> {box.name!r}: invalid box name")
    plain_log_dir = posixpath.normpath(log_dir)
    log_dir = ini(plain_log_dir)
    programs = "".join("\n" + _program(box, box.services[n], log_dir) for n in box.service_order())
    if python is not None:
        script = posixpath.join(posixpath.dirname(sock_path), LISTENER_SCRIPT)
        programs = "\n" + _listener(script, python, plain_log_dir) + programs
    template = resources.files("devbox.templates").joinpath("supervisord.conf").read_text()
    text = Template(template).substitute(
        box=box.name,
        sock=ini(sock_path),
        user_line=f"user={run_as}"
        if run_as is not None
        else "; user= (not set: supervisord runs as its caller)",
        log_dir=log_dir,
        maxbytes=LOG_MAXBYTES,
        backups=LOG_BACKUPS,
        pidfile=ini(posixpath.join(posixpath.dirname(sock_path), "supervisord.pid")),
        programs=programs,
    )
    return text.rstrip("\n") + "\n"


def listener_source() -> str:
    """The text of logstamp.py, to be written as LISTENER_SCRIPT next to the box's socket."""
    return resources.files("devbox.services").joinpath("logstamp.py").read_text()


def supervisord_command(conf_path: str, supervisord: str = SUPERVISORD) -> list[str]:
    """The argv of a box's PID 1.

    Inside a box supervisord is Debian's: `apt-get install supervisor` puts the script at
    /usr/bin/supervisord, running /usr/bin/python3 with the packaged `supervisor` module, so no
    lookup is needed; images without it get the package added by the image builder. `-n` duplicates
    `nodaemon=true` on purpose: PID 1 must never fork into the background.
    """
    return [supervisord, "-n", "-c", conf_path]


def split_command(command: str) -> list[str]:
    """Split a command string the way supervisor does (shlex.split, POSIX, no shell)."""
    return shlex.split(command)
