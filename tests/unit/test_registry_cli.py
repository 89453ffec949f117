"""`devbox pull | push | login | logout`: help renders, registry names normalize, bad input is one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devbox.cli.registry import _registry_name
from devbox.errors import ConfigError

DEVBOX = str(Path(sys.executable).parent / "devbox")


@pytest.mark.parametrize("verb", ["pull", "push", "login", "logout"])
def test_help(verb: str) -> None:
    r = subprocess.run([DEVBOX, verb, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"Usage: devbox {verb}" in r.stdout


@pytest.mark.parametrize("given,expected", [
    ("https://index.docker.io/v1/", "docker.io"),
    ("registry-1.docker.io", "docker.io"),
    ("docker.io", "docker.io"),
    ("http://localhost:5000/", "localhost:5000"),
    ("ghcr.io", "ghcr.io"),
    ("[::1]:5000", "[::1]:5000"),
])  # fmt: skip
def test_registry_name(given: str, expected: str) -> None:
    assert _registry_name(given) == expected


@pytest.mark.parametrize("bad", ["", "ghcr.io/org", "bad host"])
def test_registry_name_bad(bad: str) -> None:
    with pytest.raises(ConfigError):
        _registry_name(bad)


def test_login_without_user_on_a_pipe(tmp_path: Path) -> None:
    env = dict(os.environ, DEVBOX_AUTH_FILE=str(tmp_path / "a.json"))
    r = subprocess.run([DEVBOX, "login", "127.0.0.1:9", "--password-stdin"], input="pw\n", env=env,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 125
    assert r.stderr == "devbox: error: no user name given (use -u USER)\n"


def test_login_unreachable_registry(tmp_path: Path) -> None:
    env = dict(os.environ, DEVBOX_AUTH_FILE=str(tmp_path / "a.json"))
    r = subprocess.run([DEVBOX, "login", "127.0.0.1:9", "-u", "u", "--password-stdin"], input="pw\n", env=env,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 125
    assert r.stderr.startswith("devbox: error: login: cannot connect to 127.0.0.1:9")
    assert len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "a.json").exists()
