"""`devbox logs --since`: the timestamped service logs written in the box by the `_devbox_logs` event
listener (logstamp.py), read from the host.

A box writes NAME.ts.log (and NAME.ts.log.1 after a rotation) in its log folder, one CRI record per
line: `2026-11-28T13:40:01.123456Z stdout F text` (`P`: a part of a line that the next record of the
same stream continues). The folder is the box's to write, so every file is opened with
services.client.open_box_file (no symlinks, regular files only), and records that do not parse are
skipped rather than trusted.
"""

from __future__ import annotations

import heapq
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from devbox import errors

SUFFIX = ".ts.log"
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhd])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SINCE_FORMS = (
    "a duration such as 30s, 10m, 2h, 1d or 1h30m, or an ISO 8601 time such as 2026-11-28T13:40:00Z"
)


def parse_since(value: str, now: float | None = None) -> float:
    """The time (Unix seconds) that `--since VALUE` means: VALUE ago for a duration (10s, 5m, 2h,
    1d, combinations such as 1h30m, decimals such as 1.5h), or an ISO 8601 date or time (without a
    zone it is local time). Raises ConfigError naming the value and the accepted forms."""
    v = value.strip()
    if _DURATION.fullmatch(v):
        secs = sum(float(n) * _UNIT[u] for n, u in _PART.findall(v))
        return (time.time() if now is None else now) - secs
    try:
        dt = datetime.fromisoformat(v) if v and v[0].isdigit() and len(v) >= 10 else None
    except ValueError:
        dt = None
    if dt is None:
        raise errors.ConfigError(f"invalid --since value {value!r}", hint=f"use {SINCE_FORMS}")
    if dt.tzinfo is None:
        dt = dt.astimezone()  # local time
    return dt.timestamp()


@dataclass(frozen=True)
class Record:
    time: float  # Unix seconds
    stream: str  # "stdout" or "stderr"
    text: bytes  # the line, without its newline


def _parse_time(raw: bytes) -> float | None:
    try:
        s = raw.decode("ascii")
        if s.endswith("Z"):
            s = s[:-1] + "+00:00"
        dt = datetime.fromisoformat(s)
    except (UnicodeDecodeError, ValueError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass
class Parser:
    """Turns the bytes of a .ts.log, fed in any pieces, into whole-line Records: an incomplete last
    line waits for the next feed, and P records wait for the record that ends their line."""

    rest: bytes = b""
    pending: dict[str, tuple[float, list[bytes]]] = field(default_factory=dict)

    def feed(self, data: bytes) -> list[Record]:
        data = self.rest + data
        cut = data.rfind(b"\n") + 1
        self.rest = data[cut:]
        out: list[Record] = []
        for line in data[:cut].split(b"\n")[:-1]:
            parts = line.split(b" ", 3)
            if len(parts) < 3 or parts[2] not in (b"F", b"P") or parts[1] not in (b"stdout", b"stderr"):
                continue  # not a record (a box can write anything here): skip it
            t = _parse_time(parts[0])
            if t is None:
                continue
            stream, text = parts[1].decode(), parts[3] if len(parts) == 4 else b""
            t0, pieces = self.pending.pop(stream, (t, []))
            pieces.append(text)
            if parts[2] == b"P":
                self.pending[stream] = (t0, pieces)
            else:
                out.append(Record(t0, stream, b"".join(pieces)))
        return out

    def flush(self) -> list[Record]:
        """Lines still waiting for their end (a program that wrote no newline yet), oldest first."""
        out = sorted((Record(t, s, b"".join(p)) for s, (t, p) in self.pending.items()), key=lambda r: r.time)
        self.pending.clear()
        return out


def parse_lines(data: bytes) -> list[Record]:
    """Every record of a whole file's bytes (an unfinished last line is left out)."""
    p = Parser()
    return p.feed(data) + p.flush()


def select(records: Iterable[Record], since: float | None, tail: int) -> list[Record]:
    """The records from `since` on (all when None), then the last `tail` of them (all when < 0)."""
    out = [r for r in records if since is None or r.time >= since]
    if tail >= 0:
        out = out[-tail:] if tail else []
    return out


def merge(per_source: Iterable[tuple[str, list[Record]]]) -> Iterator[tuple[str, Record]]:
    """Records of several sources (each in time order), labelled, in time order overall."""
    iters = [[(r.time, i, label, r) for r in recs] for i, (label, recs) in enumerate(per_source)]
    for _t, _i, label, r in heapq.merge(*iters):
        yield label, r


def format_line(label: str, rec: Record, prefix: bool) -> bytes:
    return (f"{label} | ".encode() if prefix else b"") + rec.text + b"\n"


class TsLog:
    """One service's timestamped log in a box's log folder, read safely from the host: the rotated
    file (NAME.ts.log.1) first, then NAME.ts.log, followed across rotations."""

    def __init__(self, log_dir: Path, service: str) -> None:
        self.log_dir = log_dir
        self.name = service + SUFFIX
        self.parser = Parser()
        self.f: BinaryIO | None = None
        self.ino: tuple[int, int] | None = None

    def _open(self, name: str) -> BinaryIO | None:
        from devbox.services.client import open_box_file

        try:
            return os.fdopen(open_box_file(self.log_dir, name), "rb")
        except errors.ServiceError:
            return None

    def read_all(self) -> list[Record]:
        """Every complete record so far; keeps the current file open for poll()."""
        recs: list[Record] = []
        old = self._open(self.name + ".1")
        if old is not None:
            with old:
                recs += self.parser.feed(old.read())
            self.parser.rest = b""  # a torn last line of the rotated file is not continued by the new one
        self.f = self._open(self.name)
        if self.f is not None:
            st = os.fstat(self.f.fileno())
            self.ino = (st.st_dev, st.st_ino)
            recs += self.parser.feed(self.f.read())
        return recs

    def poll(self) -> list[Record]:
        """New complete records since the last read; reopens the file after a rotation."""
        recs: list[Record] = []
        if self.f is not None:
            recs += self.parser.feed(self.f.read())
        cur = self._open(self.name)
        if cur is None:
            return recs
        st = os.fstat(cur.fileno())
        if (st.st_dev, st.st_ino) == self.ino:
            cur.close()
            return recs
        if self.f is not None:  # rotated: finish the old file, then start on the new one
            recs += self.parser.feed(self.f.read())
            self.f.close()
        self.parser.rest = b""
        self.f, self.ino = cur, (st.st_dev, st.st_ino)
        return recs + self.parser.feed(self.f.read())

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


def print_since(out: Any, sources: list[tuple[str, Path, str]], *, since: float | None, tail: int,
                follow: bool, prefix: bool, poll: float = 0.1) -> None:  # fmt: skip
    """Print the .ts.log records of `sources` ((label, log dir, service)) from `since` on: the last
    `tail` of each service, merged in time order; with `follow`, then every new line as it comes."""
    logs = [(label, TsLog(d, svc)) for label, d, svc in sources]
    try:
        first = [(label, select(log.read_all() + (log.parser.flush() if not follow else []), since, tail))
                 for label, log in logs]  # fmt: skip
        for label, rec in merge(first):
            out.write(format_line(label, rec, prefix))
        out.flush()
        while follow:
            new = [(label, select(log.poll(), since, -1)) for label, log in logs]
            wrote = False
            for label, rec in merge(new):
                out.write(format_line(label, rec, prefix))
                wrote = True
            out.flush()
            if not wrote:
                time.sleep(poll)
    finally:
        for _label, log in logs:
            log.close()
