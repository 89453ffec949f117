"""devbox/cli/up.py's typer-free parse of `up` and `status` against typer's own parse of the same argv."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devbox.cli import up as fast

FAST = [
    ["up"], ["status"], ["--debug", "up"], ["--debug", "status"], ["--debug", "--debug", "up"],
    ["up", "a"], ["up", "a", "b", "c"], ["up", "--build"], ["up", "--dry-run"], ["up", "--frozen"],
    ["up", "--file", "x/Devboxfile"], ["up", "--file=x/Devboxfile"], ["up", "a", "--file", "D", "b"],
    ["up", "--build", "--build"], ["up", "--file", "A", "--file", "B"], ["up", "--file", "-a"],
    ["up", "--dry-run", "a", "--build", "--frozen", "--file=/abs/Devboxfile"], ["up", "-"],
    ["status", "--json"], ["status", "--file", "D"], ["status", "--json", "--file=D", "--json"],
    ["--debug", "status", "--json"],
]  # fmt: skip
# left to typer: help, version, unknown or malformed options, extra arguments, --watch, other verbs
SLOW = [
    ["up", "--help"], ["up", "-h"], ["--help"], ["--version"], ["--version", "up"], ["up", "--watch"],
    ["up", "--nope"], ["up", "-x"], ["up", "--file"], ["up", "--file="], ["up", "--build=1"],
    ["up", "--", "a"], ["status", "a"], ["status", "--build"], ["up", "--debug"], ["--debug=1", "up"],
    ["status", "--json=yes"], ["halt"], ["run", "x"], [], ["--debug"], ["up", "--fil", "D"],
]  # fmt: skip


def _typer_parse(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[str, bool, dict] | str:
    """What typer hands to the bodies, or "error"/"exit" when it stops first."""
    from devbox import log
    from devbox.cli import _typer_app, project

    got: dict = {}
    monkeypatch.setattr(log, "setup", lambda debug=False: got.setdefault("debug", debug))
    monkeypatch.setattr(fast, "run_up", lambda *a: got.setdefault("call", ("up", a)))
    monkeypatch.setattr(fast, "run_status", lambda *a: got.setdefault("call", ("status", a)))
    app = _typer_app.app
    if not app.registered_commands:
        project.register(app)
    try:
        app(argv, prog_name="devbox", standalone_mode=False)
    except Exception as e:
        return "exit" if type(e).__name__ == "Exit" else "error"
    if "call" not in got:
        return "exit"
    verb, a = got["call"]
    if verb == "up":
        keys = ["boxes", "build", "dry_run", "watch", "frozen", "file"]
    else:
        keys = ["as_json", "file"]
    kw = dict(zip(keys, a))
    return verb, got["debug"], kw


ARGVS = FAST + SLOW


@pytest.mark.parametrize("argv", ARGVS, ids=[" ".join(a) or "(none)" for a in ARGVS])
def test_fast_parse_matches_typer(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("DEVBOX_FROZEN", raising=False)
    monkeypatch.delenv("DEVBOX_FILE", raising=False)
    mine = fast.parse(argv)
    theirs = _typer_parse(argv, monkeypatch)
    if argv in SLOW:
        assert mine is None
        return
    assert theirs == mine, f"argv {argv}: typer {theirs}, fast {mine}"


def test_frozen_env_goes_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVBOX_FROZEN", "1")
    assert fast.parse(["up"]) is None
    assert fast.parse(["status"]) is not None


def test_file_is_a_path() -> None:
    p = fast.parse(["up", "--file", "a/b"])
    assert p is not None and p[2]["file"] == Path("a/b")


def test_no_typer_import_on_up_and_status() -> None:
    code = ("import sys; from devbox.cli import up; assert up.parse(['up']); "
            "import devbox.cli; print('typer' in sys.modules, 'click' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_usage_errors_stay_typer(tmp_path: Path) -> None:
    """An unknown option of `up` gets typer's usage error, as before the fast path."""
    r = subprocess.run([sys.executable, "-m", "devbox", "up", "--nope"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "No such option" in r.stderr
