"""supervisor event listener `_devbox_logs`: timestamped copies of every service's output.

This file runs INSIDE the box (devbox writes it to /run/devbox/logstamp.py, and supervisord.conf
starts it as `python3 -I -S logstamp.py LOG_DIR MAXBYTES`), with the box's own python3 (the one
supervisord runs on), so it must stay standard-library only and work on Python 3.7+.

supervisor sends a PROCESS_LOG_STDOUT/STDERR event for each chunk a program writes (the programs
have stdout_events_enabled/stderr_events_enabled). Each chunk is appended to LOG_DIR/NAME.ts.log in
the CRI log format, one record per line:

    2026-11-28T13:40:01.123456Z stdout F the line

`F` ends a line; `P` is a part of a line that continues in the next record (a chunk that did not end
with a newline is written at once, as P, rather than held back). The file is rotated to NAME.ts.log.1
once it passes MAXBYTES. The listener never makes supervisord wait: every event is acknowledged OK,
even when writing failed (the error goes to the listener's stderr).

Protocol (supervisor's docs, "Event Listener Notification Protocol"): write READY, read a header line
`ver:3.0 ... eventname:PROCESS_LOG_STDOUT len:N`, read N characters of payload (supervisor counts
characters of the decoded text, not bytes), answer `RESULT 2\\nOK`, repeat.
"""

# ruff: noqa: UP031  (runs on the box's python3, which may be older than devbox's: plain % formatting)
import io
import os
import re
import sys
import time

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")
SUFFIX = ".ts.log"


def stamp(t):
    """RFC 3339 UTC time with microseconds: 2026-11-28T13:40:01.123456Z."""
    sec = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ".%06dZ" % int((t - sec) * 1e6)


def parse_payload(payload):
    """(processname, channel, data) of a PROCESS_LOG payload."""
    header, _, data = payload.partition("\n")
    fields = dict(kv.split(":", 1) for kv in header.split() if ":" in kv)
    return fields.get("processname", ""), fields.get("channel", ""), data


def records(ts, channel, data):
    """CRI records (text) for one chunk of output: complete lines as F, a trailing rest as P."""
    out = []
    lines = data.split("\n")
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        if last and line == "":
            break
        out.append("%s %s %s %s\n" % (ts, channel, "P" if last else "F", line))
    return "".join(out)


class Writer:
    def __init__(self, log_dir, maxbytes):
        self.log_dir = log_dir
        self.maxbytes = maxbytes
        self.fds = {}

    def _open(self, name):
        fd = self.fds.get(name)
        if fd is None:
            path = os.path.join(self.log_dir, name + SUFFIX)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            self.fds[name] = fd
        return fd

    def write(self, name, text):
        if not NAME_RE.match(name) or not text:
            return
        fd = self._open(name)
        os.write(fd, text.encode("utf-8", "surrogateescape"))
        if self.maxbytes > 0 and os.fstat(fd).st_size >= self.maxbytes:
            path = os.path.join(self.log_dir, name + SUFFIX)
            os.close(self.fds.pop(name))
            os.replace(path, path + ".1")


def main(argv=None, stdin=None, stdout=None, now=time.time):
    argv = sys.argv[1:] if argv is None else argv
    log_dir = argv[0]
    maxbytes = int(argv[1]) if len(argv) > 1 else 10 * 1024 * 1024
    # newline="\n": no newline translation, so character counts match supervisor's `len:`
    stdin = stdin or io.TextIOWrapper(
        sys.stdin.buffer, encoding="utf-8", errors="surrogateescape", newline="\n"
    )
    stdout = stdout or sys.stdout.buffer
    w = Writer(log_dir, maxbytes)
    while True:
        stdout.write(b"READY\n")
        stdout.flush()
        header = stdin.readline()
        if not header:
            return 0
        fields = dict(kv.split(":", 1) for kv in header.split() if ":" in kv)
        payload = stdin.read(int(fields.get("len", "0")))
        try:
            if fields.get("eventname", "").startswith("PROCESS_LOG"):
                name, channel, data = parse_payload(payload)
                if channel in ("stdout", "stderr"):
                    w.write(name, records(stamp(now()), channel, data))
        except Exception as e:  # noqa: BLE001  never block supervisord: report and acknowledge anyway
            sys.stderr.write("_devbox_logs: %s\n" % (e,))
            sys.stderr.flush()
        stdout.write(b"RESULT 2\nOK")
        stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
