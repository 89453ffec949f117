from __future__ import annotations

import json

import pytest

from devbox.errors import ConfigError
from devbox.runtime.resources import Resources, parse_cpu_shares, parse_cpus, parse_memory, parse_pids

M = 1024 * 1024


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("256m", 256 * M),
        ("256M", 256 * M),
        ("256mb", 256 * M),
        ("256MiB", 256 * M),
        ("2g", 2048 * M),
        ("2GB", 2048 * M),
        ("1t", 1024**4),
        ("8192k", 8 * M),
        ("1.5g", 1536 * M),
        ("10485760", 10 * M),
        ("10485760b", 10 * M),
        (" 64m ", 64 * M),
        (10 * M, 10 * M),
    ],
)
def test_parse_memory(value: str | int, expected: int) -> None:
    assert parse_memory(value) == expected


@pytest.mark.parametrize("value", ["12q", "", "m", "-5m", "1e9", "5 m b", "12ib", "0x10m", True, 1.5])
def test_parse_memory_rejects(value: object) -> None:
    with pytest.raises(ConfigError) as e:
        parse_memory(value, "--memory")  # type: ignore[arg-type]
    assert e.value.message == f"invalid --memory value '{value}'"
    assert e.value.hint == "use a number with an optional unit: 512m, 2g"


def test_parse_memory_minimum_and_field_name() -> None:
    with pytest.raises(ConfigError) as e:
        parse_memory("1m", "boxes -> web -> resources -> memory")
    assert e.value.message == "invalid boxes -> web -> resources -> memory value '1m': the minimum is 6m"


@pytest.mark.parametrize(
    ("value", "expected"), [("0.5", 0.5), ("2", 2.0), (1, 1.0), (0.25, 0.25), ("0.01", 0.01)]
)
def test_parse_cpus(value: object, expected: float) -> None:
    assert parse_cpus(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["abc", "", "0", "-1", "0.001", "nan", "inf", True, None])
def test_parse_cpus_rejects(value: object) -> None:
    with pytest.raises(ConfigError) as e:
        parse_cpus(value, "--cpus")  # type: ignore[arg-type]
    assert e.value.message.startswith(f"invalid --cpus value '{value}'")
    assert e.value.hint


def test_parse_pids_and_shares() -> None:
    assert parse_pids("128") == 128
    assert parse_pids(1) == 1
    assert parse_cpu_shares("512") == 512
    bad_pids: tuple[object, ...] = ("0", "-1", "1.5", "x", True)
    for bad in bad_pids:
        with pytest.raises(ConfigError, match=r"invalid --pids value"):
            parse_pids(bad)  # type: ignore[arg-type]
    for bad in ("1", "262145", "a"):
        with pytest.raises(ConfigError, match=r"invalid --cpu-shares value"):
            parse_cpu_shares(bad)


def test_resources_parse_names_the_option() -> None:
    r = Resources.parse(memory="64m", cpus="0.5", pids="32", cpu_shares="512")
    assert r == Resources(memory=64 * M, cpus=0.5, cpu_shares=512, pids=32)
    with pytest.raises(ConfigError) as e:
        Resources.parse(cpu_shares="1")
    assert e.value.message == "invalid --cpu-shares value '1'"
    with pytest.raises(ConfigError) as e:
        Resources.parse(memory="12q", prefix="boxes -> web -> resources -> ")
    assert e.value.message == "invalid boxes -> web -> resources -> memory value '12q'"


def test_resources_json_round_trip() -> None:
    r = Resources(memory=64 * M, cpus=0.5, cpu_shares=None, pids=32)
    assert Resources.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert Resources.from_dict({}) == Resources()
    assert Resources.from_dict(None) == Resources()
    assert Resources.from_dict({"memory": 64 * M}) == Resources(memory=64 * M)
    assert Resources().is_empty() and not r.is_empty()
    with pytest.raises(ConfigError, match="unknown resources field"):
        Resources.from_dict({"mem": 1})
    with pytest.raises(ConfigError, match="resources.pids"):
        Resources.from_dict({"pids": -3})
