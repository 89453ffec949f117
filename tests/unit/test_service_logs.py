"""`devbox logs --since`: parsing --since, the CRI records of logstamp.py, filtering, the safe reader."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devbox.errors import ConfigError
from devbox.services import logs, logstamp

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "ago"),
    [("10s", 10), ("5m", 300), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("1d2h3m4s", 93784),
     ("1.5h", 5400), ("0s", 0), (" 10m ", 600)],
)  # fmt: skip
def test_since_durations(value: str, ago: float) -> None:
    assert logs.parse_since(value, now=NOW) == NOW - ago


def test_since_iso_times() -> None:
    assert logs.parse_since("2027-01-15T08:00:00Z") == datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()
    assert logs.parse_since("2027-01-15T08:00:00+02:00") == datetime(2027, 1, 15, 6, tzinfo=UTC).timestamp()
    assert (
        logs.parse_since("2027-01-15T08:00:00.5Z")
        == datetime(2027, 1, 15, 8, 0, 0, 500000, tzinfo=UTC).timestamp()
    )
    # without a zone: local time
    assert logs.parse_since("2027-01-15 08:00") == datetime(2027, 1, 15, 8).astimezone().timestamp()
    assert logs.parse_since("2027-01-15") == datetime(2027, 1, 15).astimezone().timestamp()


@pytest.mark.parametrize(
    "value", ["", "10", "m", "10x", "-5m", "5 m", "10m ago", "yesterday", "2027-13-01", "1h-30m", "1e3s"]
)
def test_since_bad_values_name_the_value_and_the_forms(value: str) -> None:
    with pytest.raises(ConfigError) as ei:
        logs.parse_since(value, now=NOW)
    assert repr(value) in str(ei.value)
    assert "10m" in (ei.value.hint or "") and "ISO 8601" in (ei.value.hint or "")
    assert "\n" not in str(ei.value) + (ei.value.hint or "")


# ---- the listener's records -----------------------------------------------------------------------


def test_stamp_is_rfc3339_utc() -> None:
    assert logstamp.stamp(1_800_000_000.25) == "2027-01-15T08:00:00.250000Z"
    assert logs._parse_time(logstamp.stamp(1_800_000_000.25).encode()) == 1_800_000_000.25


def test_records_mark_complete_and_partial_lines() -> None:
    ts = "2027-01-15T08:00:00.000000Z"
    assert logstamp.records(ts, "stdout", "a\nb\n") == f"{ts} stdout F a\n{ts} stdout F b\n"
    assert logstamp.records(ts, "stderr", "a\npart") == f"{ts} stderr F a\n{ts} stderr P part\n"
    assert logstamp.records(ts, "stdout", "\n") == f"{ts} stdout F \n"
    assert logstamp.records(ts, "stdout", "") == ""


def envelope(name: str, channel: str, data: str, serial: int = 1) -> str:
    payload = f"processname:{name} groupname:{name} pid:42 channel:{channel}\n{data}"
    kind = "PROCESS_LOG_STDOUT" if channel == "stdout" else "PROCESS_LOG_STDERR"
    return f"ver:3.0 server:devbox-b serial:{serial} pool:_devbox_logs poolserial:{serial} eventname:{kind} len:{len(payload)}\n{payload}"


def test_listener_protocol_and_files(tmp_path: Path) -> None:
    """The listener speaks supervisor's protocol (len: counts characters) and appends records."""
    stdin = io.StringIO(
        envelope("web", "stdout", "héllo\nwor", 1) + envelope("web", "stdout", "ld\n", 2)
        + envelope("web", "stderr", "oops\n", 3) + envelope("../evil", "stdout", "x\n", 4)
        + "ver:3.0 server:x serial:5 pool:p poolserial:5 eventname:TICK_5 len:4\nwhen"
    )  # fmt: skip
    out = io.BytesIO()
    times = iter([NOW, NOW + 1, NOW + 2, NOW + 3])
    assert logstamp.main([str(tmp_path), "0"], stdin=stdin, stdout=out, now=lambda: next(times)) == 0
    assert out.getvalue() == b"READY\n" + b"RESULT 2\nOKREADY\n" * 5
    assert sorted(os.listdir(tmp_path)) == ["web.ts.log"]
    recs = logs.parse_lines((tmp_path / "web.ts.log").read_bytes())
    assert [(r.time, r.stream, r.text) for r in recs] == [
        (NOW, "stdout", "héllo".encode()), (NOW, "stdout", b"world"), (NOW + 2, "stderr", b"oops"),
    ]  # fmt: skip


def test_listener_rotates(tmp_path: Path) -> None:
    w = logstamp.Writer(str(tmp_path), 100)
    for i in range(10):
        w.write("s", logstamp.records(logstamp.stamp(NOW + i), "stdout", f"line {i}\n"))
    assert (tmp_path / "s.ts.log.1").exists()
    assert os.path.getsize(tmp_path / "s.ts.log") < 100
    both = logs.parse_lines((tmp_path / "s.ts.log.1").read_bytes() + (tmp_path / "s.ts.log").read_bytes())
    assert [r.text for r in both][-2:] == [b"line 8", b"line 9"]


def test_listener_never_follows_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("")
    (tmp_path / "s.ts.log").symlink_to(target)
    stdin = io.StringIO(envelope("s", "stdout", "x\n"))
    err = io.StringIO()
    import contextlib

    with contextlib.redirect_stderr(err):
        logstamp.main([str(tmp_path)], stdin=stdin, stdout=io.BytesIO())
    assert target.read_text() == "" and "_devbox_logs" in err.getvalue()


# ---- parsing, filtering, merging --------------------------------------------------------------------


def rec(t: float, stream: str, tag: str, text: str) -> bytes:
    return f"{logstamp.stamp(t)} {stream} {tag} {text}\n".encode()


def test_parser_joins_partial_lines_per_stream_and_skips_junk() -> None:
    data = (rec(NOW, "stdout", "P", "hel") + rec(NOW + 1, "stderr", "F", "err") + b"garbage line\n"
            + b"not-a-time stdout F x\n" + rec(NOW + 2, "stdout", "F", "lo") + rec(NOW + 3, "stdout", "F", ""))  # fmt: skip
    recs = logs.parse_lines(data)
    assert [(r.time, r.stream, r.text) for r in recs] == [
        (NOW + 1, "stderr", b"err"), (NOW, "stdout", b"hello"), (NOW + 3, "stdout", b""),
    ]  # fmt: skip


def test_parser_keeps_an_unfinished_line_for_the_next_feed() -> None:
    p = logs.Parser()
    line = rec(NOW, "stdout", "F", "whole")
    assert p.feed(line[:10]) == []
    assert [r.text for r in p.feed(line[10:])] == [b"whole"]
    assert p.feed(rec(NOW, "stdout", "P", "no newline yet")) == []
    assert [r.text for r in p.flush()] == [b"no newline yet"]


def test_select_since_and_tail() -> None:
    recs = [logs.Record(NOW + i, "stdout", b"%d" % i) for i in range(10)]
    assert [r.text for r in logs.select(recs, NOW + 7, -1)] == [b"7", b"8", b"9"]
    assert [r.text for r in logs.select(recs, NOW + 3, 2)] == [b"8", b"9"]
    assert logs.select(recs, NOW + 3, 0) == []
    assert len(logs.select(recs, None, -1)) == 10
    assert logs.select(recs, NOW + 100, -1) == []


def test_merge_orders_by_time_across_services() -> None:
    a = [logs.Record(NOW + i, "stdout", b"a%d" % i) for i in (0, 2, 4)]
    b = [logs.Record(NOW + i, "stdout", b"b%d" % i) for i in (1, 3)]
    merged = [(label, r.text) for label, r in logs.merge([("x/a", a), ("x/b", b)])]
    assert merged == [("x/a", b"a0"), ("x/b", b"b1"), ("x/a", b"a2"), ("x/b", b"b3"), ("x/a", b"a4")]
    assert logs.format_line("x/a", a[0], True) == b"x/a | a0\n"
    assert logs.format_line("x/a", a[0], False) == b"a0\n"


# ---- the reader -------------------------------------------------------------------------------------


def test_print_since_reads_rotated_then_current(tmp_path: Path) -> None:
    (tmp_path / "web.ts.log.1").write_bytes(
        rec(NOW, "stdout", "F", "old") + rec(NOW + 10, "stdout", "F", "r")
    )
    (tmp_path / "web.ts.log").write_bytes(
        rec(NOW + 20, "stderr", "F", "new") + rec(NOW + 30, "stdout", "F", "newer")
    )
    (tmp_path / "db.ts.log").write_bytes(rec(NOW + 25, "stdout", "F", "db"))
    out = io.BytesIO()
    logs.print_since(out, [("b/web", tmp_path, "web"), ("b/db", tmp_path, "db"), ("b/none", tmp_path, "none")],
                     since=NOW + 5, tail=-1, follow=False, prefix=True)  # fmt: skip
    assert out.getvalue() == b"b/web | r\nb/web | new\nb/db | db\nb/web | newer\n"
    out = io.BytesIO()
    logs.print_since(out, [("b/web", tmp_path, "web")], since=NOW + 5, tail=1, follow=False, prefix=False)
    assert out.getvalue() == b"newer\n"


def test_reader_refuses_symlinks_the_box_planted(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(rec(NOW, "stdout", "F", "host secret"))
    d = tmp_path / "logs"
    d.mkdir()
    (d / "web.ts.log").symlink_to(secret)
    (d / "web.ts.log.1").symlink_to(secret)
    out = io.BytesIO()
    logs.print_since(out, [("b/web", d, "web")], since=None, tail=-1, follow=False, prefix=False)
    assert out.getvalue() == b""
    # nor a symlinked log folder
    (tmp_path / "link").symlink_to(tmp_path)
    logs.print_since(
        out, [("b/secret", tmp_path / "link", "x")], since=None, tail=-1, follow=False, prefix=False
    )
    assert out.getvalue() == b""


def test_tslog_follows_appends_and_rotation(tmp_path: Path) -> None:
    p = tmp_path / "s.ts.log"
    p.write_bytes(rec(NOW, "stdout", "F", "one"))
    log = logs.TsLog(tmp_path, "s")
    try:
        assert [r.text for r in log.read_all()] == [b"one"]
        assert log.poll() == []
        with open(p, "ab") as f:
            f.write(rec(NOW + 1, "stdout", "F", "two") + rec(NOW + 2, "stdout", "F", "thr")[:5])
        assert [r.text for r in log.poll()] == [b"two"]
        with open(p, "ab") as f:
            f.write(rec(NOW + 2, "stdout", "F", "thr")[5:])
        os.replace(p, tmp_path / "s.ts.log.1")
        p.write_bytes(rec(NOW + 3, "stdout", "F", "four"))
        assert [r.text for r in log.poll()] == [b"thr", b"four"]
        assert log.poll() == []
    finally:
        log.close()
