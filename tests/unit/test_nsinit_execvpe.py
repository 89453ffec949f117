"""nsinit._execvpe: os.execvpe's PATH search without importing anything (it runs after pivot_root,
where the host's standard library is out of reach)."""

from __future__ import annotations

import builtins
import os
from pathlib import Path

import pytest

from devbox.runtime import nsinit


def _execvpe_importing_nothing(file: str, env: dict[str, str]) -> None:
    """Call _execvpe with every import refused (an ImportError would replace the OSError expected)."""

    def refuse(name: str, *a: object, **k: object) -> object:
        raise ImportError(f"import of {name} after pivot_root")

    real = builtins.__import__
    builtins.__import__ = refuse
    try:
        nsinit._execvpe(file, [file], env)
    finally:
        builtins.__import__ = real


def test_not_found_anywhere_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        _execvpe_importing_nothing("nosuch", {"PATH": f"/etc/hostname:/nonexistent:{tmp_path}"})


def test_a_non_executable_match_wins_over_later_misses(tmp_path: Path) -> None:
    (tmp_path / "tool").write_text("#!/bin/sh\n")  # mode 0644: EACCES, as os.execvpe reports it
    with pytest.raises(PermissionError):
        _execvpe_importing_nothing("tool", {"PATH": f"/nonexistent:{tmp_path}:/nonexistent2"})


def test_a_name_with_a_slash_is_not_searched() -> None:
    with pytest.raises(FileNotFoundError):
        _execvpe_importing_nothing("sub/true", {"PATH": "/bin:/usr/bin"})


def test_it_execs_the_first_executable_on_path(tmp_path: Path) -> None:
    (tmp_path / "tool").write_text("#!/bin/sh\nexit 7\n")
    (tmp_path / "tool").chmod(0o755)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child execs or exits
        try:
            nsinit._execvpe("tool", ["tool"], {"PATH": f"/nonexistent:{tmp_path}"})
        finally:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 7
