"""`devbox run`'s own parser (cli/runner.py) against typer's parse of the same command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devbox.cli import runner


def _typer_command(verb: str) -> Any:
    import typer.main

    import devbox.cli as cli

    cli._register()  # every verb: the app is shared with other tests
    group = typer.main.get_command(cli.app)
    return group.commands[verb]  # type: ignore[attr-defined]


def _typer_run_command() -> Any:
    return _typer_command("run")


def _check_table(verb: str, options: dict[str, tuple[str, str]], defaults: dict[str, Any]) -> None:
    """Every typer option of `verb` is in the table with the same kind and default, and nothing else."""
    seen: dict[str, tuple[str, str]] = {}
    for param in _typer_command(verb).params:
        if param.param_type_name != "option":
            continue
        kind = "flag" if param.is_flag else ("list" if param.multiple else "str")
        for opt in param.opts:
            seen[opt] = (param.name, kind)
        default = list(param.default) if isinstance(param.default, (list, tuple)) else param.default
        assert defaults[param.name] == default, param.name
    assert seen == options
    assert set(defaults) == {n for n, _ in seen.values()}


def _typer_params(argv: list[str]) -> dict[str, Any]:
    ctx = _typer_run_command().make_context("run", list(argv))
    p = dict(ctx.params)
    for k, v in p.items():
        if isinstance(v, tuple):
            p[k] = list(v)
    if p.get("command") == []:
        p["command"] = None
    return p


CASES = [
    ["busybox", "/bin/true"],
    ["--rm", "busybox"],
    ["--rm", "--network", "shop", "-p", "8080:80", "busybox", "httpd", "-f", "-p", "80"],
    ["-d", "--name", "api", "--net=shop", "-p8080:80", "-p", "127.0.0.1:9000:90/udp", "img"],
    ["-it", "busybox", "sh"],
    ["-ti", "--rm", "busybox", "sh", "-c", "echo hi"],
    ["-e", "A=1", "--env", "B=2", "-eC=3", "-v", "/src:/src:ro", "--volume=/a:/b", "img", "ls", "-l"],
    ["--tmpfs", "/run", "-w", "/srv", "-u", "1000:1000", "--hostname", "h", "-m", "256m", "--cpus", "0.5",
     "--pids", "50", "img"],
    ["--pids-limit", "9", "--entrypoint", "", "--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN", "img", "x"],
    ["--detach", "--interactive", "--tty", "--memory=1g", "--user=root", "--workdir=/", "img"],
    ["--", "img", "--rm"],
    ["img", "--rm", "-p", "1:1"],
    ["-dp", "80:80", "img"],
]  # fmt: skip


@pytest.mark.parametrize("argv", CASES, ids=[" ".join(c) or "empty" for c in CASES])
def test_fast_parse_equals_typer(argv: list[str]) -> None:
    fast = runner.parse_run(argv)
    assert fast is not None, argv
    assert fast == _typer_params(argv)


@pytest.mark.parametrize(
    "argv",
    [[], ["--help"], ["-h"], ["--rm"], ["--bogus", "img"], ["-x", "img"], ["--name"], ["-p"], ["--rm=1", "img"],
     ["-itz", "img"]],
)  # fmt: skip
def test_falls_back_to_typer(argv: list[str]) -> None:
    assert runner.parse_run(argv) is None


def test_table_matches_typer_signature() -> None:
    _check_table("run", runner.RUN_OPTIONS, runner.RUN_DEFAULTS)


def test_run_imports_neither_typer_nor_pyroute2(tmp_path: Path) -> None:
    code = (
        "import sys; from devbox.cli import runner; "
        "runner.main(['run', '--rm', '--network', 'none', 'no-such-image-xyz:1', 'true']); "
        "print(sorted(m for m in ('typer', 'click', 'pyroute2') if m in sys.modules))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "DEVBOX_ROOT": str(tmp_path / "root")}, cwd=str(Path(__file__).resolve().parents[2]),
    )  # fmt: skip
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout + r.stderr
    assert "no-such-image-xyz" in r.stderr, r.stderr


# ---- exec ---------------------------------------------------------------------------------------------


def _typer_exec_params(argv: list[str]) -> dict[str, Any]:
    p = dict(_typer_command("exec").make_context("exec", list(argv)).params)
    for k, v in p.items():
        if isinstance(v, tuple):
            p[k] = list(v)
    if p.get("file") is not None:
        p["file"] = os.fspath(p["file"])
    return p


EXEC_CASES = [
    ["box", "ls"],
    ["box", "ls", "-l", "/"],
    ["-it", "box", "sh"],
    ["-ti", "-e", "A=1", "--env", "B=2", "-eC=3", "-u", "1000", "-w", "/srv", "box", "env"],
    ["--interactive", "--tty", "--user=root", "--workdir=/", "--file", "/p/Devboxfile", "web/app", "sh"],
    ["box", "--", "ls", "-i"],
    ["--", "box", "ls"],
    ["box", "-it", "sh"],  # options after the container belong to the command
]  # fmt: skip


@pytest.mark.parametrize("argv", EXEC_CASES, ids=[" ".join(c) for c in EXEC_CASES])
def test_fast_exec_parse_equals_typer(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEVBOX_FILE", raising=False)
    fast = runner.parse_exec(argv)
    assert fast is not None, argv
    assert fast == _typer_exec_params(argv)


@pytest.mark.parametrize("argv", [[], ["box"], ["--help"], ["-h", "box", "ls"], ["--bogus", "box", "ls"],
                                  ["-u"], ["-x", "box", "ls"], ["--tty=1", "box", "ls"]])  # fmt: skip
def test_exec_falls_back_to_typer(argv: list[str]) -> None:
    assert runner.parse_exec(argv) is None


def test_exec_table_matches_typer_signature() -> None:
    _check_table("exec", runner.EXEC_OPTIONS, runner.EXEC_DEFAULTS)


def test_exec_imports_no_typer(tmp_path: Path) -> None:
    code = (
        "import sys; from devbox.cli import runner; "
        "runner.main(['exec', 'no-such-container-xyz', 'true']); "
        "print(sorted(m for m in ('typer', 'click', 'pyroute2', 'yaml') if m in sys.modules))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path),
        env={**os.environ, "DEVBOX_ROOT": str(tmp_path / "root"), "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout + r.stderr
    assert "no such container: no-such-container-xyz" in r.stderr, r.stderr
