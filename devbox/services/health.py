"""Deadline-bound health waits for a box's services.

Order: supervisor socket up -> supervisord RUNNING -> each program RUNNING -> the service's own check
(tcp connect, http GET, or a command in the box). A program that goes FATAL, or EXITs and will not be
restarted, fails the wait at once with its last log lines. Every wait ends at `deadline` (a
time.monotonic() value); polls are 20 ms apart (one getAllProcessInfo call per poll, for every
service), so a warm box is seen healthy within a few polls.

Single-threaded by design (watch.py is the only module that starts threads): services are waited on
together in one polling loop. Checks themselves block for at most their `timeout`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from devbox.errors import ServiceError
from devbox.model import AutoRestart, Box, Health, Service, closure
from devbox.services.client import BACKOFF, EXITED, FATAL, RUNNING, Fault, ProcessInfo, Supervisor

POLL = 0.02
NOT_CHECKED = "not checked: another service failed"
LOG_LINES = 10
LOG_BYTES = 4096

RunInBox = Callable[[list[str]], int]


@dataclass(frozen=True)
class ServiceHealth:
    name: str
    state: str  # supervisor state name, or "UNKNOWN" when never seen
    pid: int = 0
    uptime: int = 0
    healthy: bool = False
    message: str = ""
    log: tuple[str, ...] = ()  # last lines of stderr (or stdout when stderr is empty) on failure


@dataclass(frozen=True)
class HealthReport:
    box: str
    services: dict[str, ServiceHealth] = field(default_factory=dict)  # in start order
    error: str | None = None  # supervisord itself not reachable / not RUNNING
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and all(s.healthy for s in self.services.values())

    @property
    def failed(self) -> list[ServiceHealth]:
        return [s for s in self.services.values() if not s.healthy]

    def raise_for_failure(self) -> None:
        """Raise ServiceError naming the first failure, its last log lines as the hint."""
        if self.error is not None:
            raise ServiceError(f"box {self.box}: {self.error}")
        failed = sorted(self.failed, key=lambda s: s.message == NOT_CHECKED)  # the cause first
        for s in failed:
            hint = ("last log lines:\n  " + "\n  ".join(s.log)) if s.log else None
            raise ServiceError(f"box {self.box}: service {s.name}: {s.message}", hint=hint)

    def merged(self, other: HealthReport) -> HealthReport:
        return HealthReport(
            self.box, {**self.services, **other.services}, self.error or other.error,
            self.elapsed + other.elapsed,
        )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Checks


def check_tcp(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connect succeeds, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"tcp {host}:{port}: {e.strerror or e}"


def check_http(url: str, host: str, timeout: float) -> str | None:
    """None when GET `url` (its host replaced by `host`) answers with a status below 500.

    Plain http.client: no proxy from the environment, and a 3xx is an answer (healthy), never followed
    elsewhere. (urllib.request would cost ~30 ms of imports on every `up`.)"""
    import http.client

    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    port = int(hostport.rsplit(":", 1)[1]) if ":" in hostport else 80
    target = f"http://{host}:{port}/{path}"
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/" + path, headers={"Host": hostport, "User-Agent": "devbox-health"})
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as e:
        return f"http {target}: {getattr(e, 'strerror', None) or e}"
    finally:
        conn.close()
    return None if status < 500 else f"http {target}: status {status}"


def check_command(argv: tuple[str, ...], run_in_box: RunInBox | None, timeout: float) -> str | None:
    """None when the command exits 0 in the box. It runs under coreutils' `timeout`, so a hung check
    is killed after `timeout` seconds."""
    if run_in_box is None:
        return "command checks need a way to run commands in the box"
    cmd = ["timeout", "-s", "KILL", f"{timeout:g}", *argv]
    try:
        code = run_in_box(cmd)
    except Exception as e:  # the callback's failure is the check's failure
        return f"command {list(argv)}: {e}"
    if code == 0:
        return None
    return f"command {list(argv)} " + ("timed out" if code in (124, 137) else f"exited with status {code}")


def run_check(health: Health, box_ip: str | None, run_in_box: RunInBox | None) -> str | None:
    host = box_ip or "127.0.0.1"
    if health.tcp is not None:
        return check_tcp(host, health.tcp, health.timeout)
    if health.http is not None:
        return check_http(health.http, host, health.timeout)
    if health.command is not None:
        return check_command(health.command, run_in_box, health.timeout)
    return None


# --------------------------------------------------------------------------------------------------
# Waits


@dataclass
class _Pending:
    svc: Service
    pid: int = 0
    running_since: float | None = None  # monotonic time the current pid was first seen RUNNING
    next_check: float = 0.0
    failures: int = 0
    last_problem: str = ""


def last_lines(client: Supervisor, name: str, n: int = LOG_LINES) -> tuple[str, ...]:
    """The last `n` lines of a program's stderr, or of its stdout when stderr is empty."""
    for stream in ("stderr", "stdout"):
        try:
            text = client.tail(name, stream, LOG_BYTES)
        except ServiceError:
            continue
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if lines:
            return tuple(lines[-n:])
    return ()


def _failure(client: Supervisor, info: ProcessInfo | None, name: str, message: str) -> ServiceHealth:
    return ServiceHealth(
        name=name, state=info.state if info else "UNKNOWN", pid=info.pid if info else 0,
        uptime=info.uptime if info else 0, healthy=False, message=message, log=last_lines(client, name),
    )  # fmt: skip


def _exit_is_final(svc: Service, info: ProcessInfo) -> bool:
    if svc.autorestart == AutoRestart.FALSE:
        return True
    return svc.autorestart == AutoRestart.UNEXPECTED and info.exitstatus in svc.exitcodes


def wait_healthy(
    client: Supervisor,
    box: Box,
    box_ip: str | None,
    run_in_box: RunInBox | None,
    deadline: float,
    services: list[str] | None = None,
) -> HealthReport:
    """Wait until `services` (default: those supervisord starts on its own) are RUNNING and pass
    their checks, or one fails, or `deadline` (time.monotonic()) passes. Never raises for a service
    failure: the report says what happened (report.raise_for_failure() turns it into an error)."""
    t0 = time.monotonic()
    names = (
        services
        if services is not None
        else [n for n in box.service_order() if not box.services[n].starts_later]
    )
    unknown = [n for n in names if n not in box.services]
    if unknown:
        raise ServiceError(f"box {box.name}: no service named {unknown[0]!r}")
    try:
        client.wait_ready(deadline)
    except ServiceError as e:
        return HealthReport(box.name, {}, str(e), time.monotonic() - t0)

    pending = {n: _Pending(box.services[n]) for n in names}
    results: dict[str, ServiceHealth] = {}
    infos: dict[str, ProcessInfo] = {}
    while pending:
        now = time.monotonic()
        try:
            infos = {p.name: p for p in client.processes()}
        except ServiceError as e:
            return HealthReport(box.name, _ordered(names, results), str(e), time.monotonic() - t0)
        for name in list(pending):
            p = pending[name]
            info = infos.get(name)
            if info is None:
                results[name] = _failure(
                    client, None, name, "supervisord does not know this program (config not loaded?)"
                )
                return _report(box, names, results, pending, infos, t0, client, NOT_CHECKED)
            if info.state == FATAL:
                why = info.spawnerr or info.description or "exited too quickly"
                results[name] = _failure(client, info, name, f"FATAL: {why}")
                return _report(box, names, results, pending, infos, t0, client, NOT_CHECKED)
            if info.state == EXITED and _exit_is_final(p.svc, info):
                results[name] = _failure(
                    client, info, name, f"exited with status {info.exitstatus} and will not be restarted"
                )
                return _report(box, names, results, pending, infos, t0, client, NOT_CHECKED)
            if info.state != RUNNING:
                p.running_since = None
                p.last_problem = f"{info.state}" + (
                    f": {info.spawnerr}" if info.spawnerr and info.state == BACKOFF else ""
                )
                continue
            if info.pid != p.pid or p.running_since is None:
                p.pid, p.running_since, p.failures, p.next_check = info.pid, now, 0, now
            health = p.svc.health
            if health is None:
                results[name] = _healthy(info, "RUNNING")
                del pending[name]
                continue
            if now < p.next_check:
                continue
            problem = run_check(health, box_ip, run_in_box)
            p.next_check = time.monotonic() + health.interval
            if problem is None:
                results[name] = _healthy(info, "RUNNING, check passed")
                del pending[name]
                continue
            p.last_problem = problem
            in_grace = (now - p.running_since) < health.start_period
            p.failures = 0 if in_grace else p.failures + 1
            if p.failures >= health.retries:
                results[name] = _failure(
                    client, info, name, f"unhealthy after {p.failures} failed checks: {problem}"
                )
                return _report(box, names, results, pending, infos, t0, client, NOT_CHECKED)
        if not pending:
            break
        now = time.monotonic()
        if now >= deadline:
            return _report(box, names, results, pending, infos, t0, client, None)
        wake = min(
            [deadline, now + POLL] + [p.next_check for p in pending.values() if p.running_since is not None]
        )
        time.sleep(max(0.0, min(POLL, wake - now)))
    return HealthReport(box.name, _ordered(names, results), None, time.monotonic() - t0)


def _healthy(info: ProcessInfo, message: str) -> ServiceHealth:
    return ServiceHealth(info.name, info.state, info.pid, info.uptime, True, message)


def _ordered(names: list[str], results: dict[str, ServiceHealth]) -> dict[str, ServiceHealth]:
    return {n: results[n] for n in names if n in results}


def _report(
    box: Box, names: list[str], results: dict[str, ServiceHealth], pending: dict[str, _Pending],
    infos: dict[str, ProcessInfo], t0: float, client: Supervisor, reason: str | None,
) -> HealthReport:  # fmt: skip
    """Close a wait: services still pending are reported unhealthy with `reason` (None = deadline)."""
    elapsed = time.monotonic() - t0
    for name, p in pending.items():
        if name in results:
            continue
        info = infos.get(name)
        if reason is not None:
            results[name] = ServiceHealth(name, info.state if info else "UNKNOWN", info.pid if info else 0,
                                          info.uptime if info else 0, False, reason)  # fmt: skip
        else:
            msg = f"not healthy after {elapsed:.1f}s" + (f": {p.last_problem}" if p.last_problem else "")
            results[name] = _failure(client, info, name, msg)
    return HealthReport(box.name, _ordered(names, results), None, elapsed)


def start_in_order(
    client: Supervisor,
    box: Box,
    box_ip: str | None,
    run_in_box: RunInBox | None,
    deadline: float,
    services: list[str] | None = None,
) -> HealthReport:
    """Bring `services` (default: every service with autostart) up in dependency order.

    supervisord starts services without in-box dependencies itself; services with `depends_on` are
    rendered autostart=false and started here, in waves, once everything they depend on is healthy.
    Services already running are left alone. Returns the merged report of every wave; it stops at the
    first wave with a failure."""
    want = services if services is not None else [n for n, s in box.services.items() if s.autostart]
    for n in want:
        if n not in box.services:
            raise ServiceError(f"box {box.name}: no service named {n!r}")
    needed = closure({n: s.depends_on for n, s in box.services.items()}, want)
    order = [n for n in box.service_order() if n in needed]

    report = HealthReport(box.name)
    done: set[str] = set()
    while len(done) < len(order):
        wave = [n for n in order if n not in done and all(d in done for d in box.services[n].depends_on)]
        for n in wave:
            if box.services[n].starts_later:
                try:
                    client.start(n, wait=False)
                except Fault as e:
                    if e.name != "ALREADY_STARTED":
                        report = report.merged(
                            HealthReport(box.name, {n: _failure(client, _info(client, n), n, str(e))})
                        )
                        return report
        part = wait_healthy(client, box, box_ip, run_in_box, deadline, services=wave)
        report = report.merged(part)
        if not part.ok:
            return replace(report, services=_ordered(order, dict(report.services)))
        done.update(wave)
    return replace(report, services=_ordered(order, dict(report.services)))


def _info(client: Supervisor, name: str) -> ProcessInfo | None:
    try:
        return client.info(name)
    except ServiceError:
        return None
