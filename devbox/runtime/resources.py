"""Resource limits of a container: parsing of user-facing values and the stored form.

Pure: no IO. The caller passes the name of the option or field a value came from, so the error says
where the bad value is (`--memory`, `boxes -> web -> resources -> memory`).

Values:
  memory      bytes; "512m", "2g", "1.5GiB", "1048576" (k/m/g/t are powers of 1024, case-insensitive, an
              optional "b" or "ib" suffix). At least 6 MiB, as docker requires: below that the container
              is OOM-killed while starting and the error would be confusing.
  cpus        number of CPUs, a float >= 0.01 (cfs quota of 1 ms per 100 ms period, the kernel's floor).
  cpu_shares  relative weight, 2..262144 (cgroup v1 cpu.shares range; converted to cpu.weight on v2).
  pids        maximum number of processes/threads, >= 1.
A value of None means "no limit" (and, for cpu_shares, the kernel default).
"""

from __future__ import annotations

import math

from devbox.errors import ConfigError
from devbox.record import record

TYPE_CHECKING = False  # typing costs ~4 ms to import; only type checkers need it here
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

MIN_MEMORY = 6 * 1024 * 1024
MIN_CPUS = 0.01
MIN_CPU_SHARES = 2
MAX_CPU_SHARES = 262144

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
# What the former regex's re.IGNORECASE matched for [kmgt] and i: also the Kelvin sign (U+212A, lowercase
# "k") and U+0130/U+0131 (dotted I, dotless i). Kept, so that exactly the same values parse as before.
_UNIT_CHARS = frozenset("kmgtKMGT\u212a")
_I_CHARS = frozenset("iI\u0130\u0131")


def _split_memory(value: str) -> tuple[str, str, str | None] | None:
    r"""The groups of `^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$` (re.IGNORECASE) in `value`, or None:
    (number, unit or "", "b"/"ib" suffix or None). Without `re`: it costs ~9 ms to import."""
    s = value.strip()  # \s is str.isspace, as strip(); \d is str.isdecimal (any Unicode digit, as float())
    n = len(s)
    i = 0
    while i < n and s[i].isdecimal():
        i += 1
    if i == 0:
        return None
    if i + 1 < n and s[i] == "." and s[i + 1].isdecimal():
        i += 2
        while i < n and s[i].isdecimal():
            i += 1
    number, rest = s[:i], s[i:].lstrip()
    unit = rest[:1] if rest[:1] in _UNIT_CHARS else ""
    suffix = rest[len(unit) :]
    if not suffix:
        return number, unit, None
    if suffix in ("b", "B") or (len(suffix) == 2 and suffix[0] in _I_CHARS and suffix[1] in "bB"):
        return number, unit, suffix
    return None


def _invalid(name: str, value: object, hint: str) -> ConfigError:
    return ConfigError(f"invalid {name} value '{value}'", hint=hint)


def parse_memory(value: str | int, name: str = "--memory") -> int:
    """'256m' -> 268435456. Ints are taken as bytes."""
    hint = "use a number with an optional unit: 512m, 2g"
    if isinstance(value, bool):
        raise _invalid(name, value, hint)
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = _split_memory(value)
        if not m:
            raise _invalid(name, value, hint)
        number, unit, suffix = m[0], m[1].lower(), (m[2] or "").lower()
        if suffix == "ib" and not unit:  # "512ib" is not a unit
            raise _invalid(name, value, hint)
        n = math.floor(float(number) * _UNITS[unit])
    else:
        raise _invalid(name, value, hint)
    if n < MIN_MEMORY:
        raise ConfigError(f"invalid {name} value '{value}': the minimum is 6m", hint=hint)
    return n


def parse_cpus(value: str | float | int, name: str = "--cpus") -> float:
    """'0.5' -> 0.5 (half of one CPU)."""
    hint = "use a number of CPUs such as 0.5, 1 or 2"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _invalid(name, value, hint)
    try:
        n = float(value)
    except ValueError:
        raise _invalid(name, value, hint) from None
    if not math.isfinite(n):
        raise _invalid(name, value, hint)
    if n < MIN_CPUS:
        raise ConfigError(f"invalid {name} value '{value}': the minimum is {MIN_CPUS}", hint=hint)
    return n


def _parse_int(value: str | int, name: str, hint: str) -> int:
    if isinstance(value, bool):
        raise _invalid(name, value, hint)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdecimal():  # was re.fullmatch(r"\s*\d+\s*", value)
        return int(value)
    raise _invalid(name, value, hint)


def parse_pids(value: str | int, name: str = "--pids") -> int:
    """'128' -> 128."""
    hint = "use a whole number of processes, at least 1, such as 512"
    n = _parse_int(value, name, hint)
    if n < 1:
        raise _invalid(name, value, hint)
    return n


def parse_cpu_shares(value: str | int, name: str = "--cpu-shares") -> int:
    """'512' -> 512 (the default weight is 1024)."""
    hint = f"use a whole number from {MIN_CPU_SHARES} to {MAX_CPU_SHARES}; the default is 1024"
    n = _parse_int(value, name, hint)
    if not MIN_CPU_SHARES <= n <= MAX_CPU_SHARES:
        raise _invalid(name, value, hint)
    return n


@record(frozen=True)
class Resources:
    memory: int | None = None  # bytes
    cpus: float | None = None
    cpu_shares: int | None = None
    pids: int | None = None

    @classmethod
    def parse(
        cls,
        *,
        memory: str | int | None = None,
        cpus: str | float | None = None,
        cpu_shares: str | int | None = None,
        pids: str | int | None = None,
        prefix: str = "--",
    ) -> Resources:
        """Parse user-facing values. Error names are `prefix + field` with '_' as '-' for the "--"
        prefix (`--cpu-shares`), and as-is otherwise (`boxes -> web -> resources -> cpu_shares`)."""

        def n(field: str) -> str:
            return prefix + (field.replace("_", "-") if prefix == "--" else field)

        return cls(
            memory=None if memory is None else parse_memory(memory, n("memory")),
            cpus=None if cpus is None else parse_cpus(cpus, n("cpus")),
            cpu_shares=None if cpu_shares is None else parse_cpu_shares(cpu_shares, n("cpu_shares")),
            pids=None if pids is None else parse_pids(pids, n("pids")),
        )

    def is_empty(self) -> bool:
        return self == Resources()

    def to_dict(self) -> dict[str, Any]:
        return {"memory": self.memory, "cpus": self.cpus, "cpu_shares": self.cpu_shares, "pids": self.pids}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Resources:
        """Inverse of to_dict. Missing keys are None; values are re-validated (the JSON is on disk)."""
        if not data:
            return cls()
        unknown = set(data) - {"memory", "cpus", "cpu_shares", "pids"}
        if unknown:
            raise ConfigError(f"unknown resources field(s): {', '.join(sorted(unknown))}")

        def get(key: str) -> Any:
            return data.get(key)

        return cls(
            memory=None if get("memory") is None else parse_memory(get("memory"), "resources.memory"),
            cpus=None if get("cpus") is None else parse_cpus(get("cpus"), "resources.cpus"),
            cpu_shares=(
                None
                if get("cpu_shares") is None
                else parse_cpu_shares(get("cpu_shares"), "resources.cpu_shares")
            ),
            pids=None if get("pids") is None else parse_pids(get("pids"), "resources.pids"),
        )
