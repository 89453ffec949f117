"""`devbox watch` / `devbox up --watch`: apply a Devboxfile's watch rules when files change.

The only module that imports watchdog and the only one that starts threads.

Threads and processes
---------------------
pyroute2 forks a helper to open sockets in another netns, and `devbox exec` forks into the box; a
fork() in a threaded Python process copies only the forking thread, with every lock the others held
(stdio buffers, module import locks, watchdog's own locks) stuck forever in the child. So this process
never calls os.fork() once its threads run:

- one inotify thread (watchdog's `InotifyFD`) reads the kernel queue and only *queues* raw events;
- the main thread owns everything else: the rule set, the watch descriptors, the debounce state and the
  Devboxfile reloads (parsing only; no fork, no netlink);
- each running action has a worker thread that only waits: `restart` and `signal` are XML-RPC calls to
  the box's supervisord (no fork); `rebuild` and the Devboxfile reload run `devbox up --file F [BOX]`,
  and `exec` and `sync` run this module's helper (`python -m devbox.watch exec ID USER CWD -- CMD`, the
  engine's exec_in without the CLI's start-up time), each as a child process started by
  `subprocess.Popen`, whose child runs no Python between fork and exec. Those children are fresh
  single-threaded processes and fork (pyroute2, nsinit) as they always do.

Children run in their own process group, so a Ctrl-C in the terminal reaches only the watcher. The
watcher stops reading events, waits for the actions already running to finish (a second Ctrl-C
interrupts them with SIGINT), and leaves the boxes running.

Watches
-------
watchdog's recursive observer adds a watch for every folder below a path, `.git` and `node_modules`
included, and its observer API gives each scheduled path its own emitter thread. devbox instead uses
watchdog's `InotifyFD` (one inotify instance, one thread) and adds one non-recursive watch per folder
that some rule can match: folders ignored by the defaults (model.DEFAULT_WATCH_IGNORE), by .gitignore or
by a rule's `ignore` are never watched, and neither are folders that no `include` glob can reach.
A folder that appears later (mkdir, git checkout, mv) is watched when its creation is seen, and its
content is reported as changed (what was written before the watch existed is not lost).
When the kernel refuses a watch (fs.inotify.max_user_watches) or an instance
(fs.inotify.max_user_instances), devbox says so, with the sysctl to raise. When the kernel queue
overflows (fs.inotify.max_queued_events), every rule fires once and the folders are rescanned.

Debounce
--------
Each action (box + verb + arguments; rules with the same action share it) collects changed paths
and runs when no new change has come for `quiet` seconds, or `max_delay` seconds after the first one
(a steady writer cannot starve it). The same action never runs twice at once: changes seen while it
runs make at most one follow-up run. Actions of one box run one at a time (a rebuild and a restart of
the same box never overlap); a Devboxfile reload waits for, and holds back, all of them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import queue
import re
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from devbox import errors, model
from devbox.model import WatchAction

QUIET = 0.1  # seconds without a new change before an action runs
MAX_DELAY = 3.0  # ... but at most this long after the first change
OUTPUT_TAIL = 20  # lines of a failed child's output shown

# --------------------------------------------------------------------------------------------- globs


_GLOB_CHARS = re.compile(r"[*?\[\\]")


@dataclass(frozen=True)
class Pattern:
    """One .gitignore line (also the syntax of a rule's include/ignore globs).

    anchored patterns (a slash at the start or in the middle) match the path relative to their base
    folder; the others match the last component at any depth. `literal` is the run of leading
    components without glob characters (anchored patterns only)."""

    text: str
    regex: re.Pattern[str]
    negate: bool = False
    dir_only: bool = False
    anchored: bool = False
    literal: tuple[str, ...] = ()

    def matches(self, parts: tuple[str, ...], is_dir: bool) -> bool:
        if not parts or (self.dir_only and not is_dir):
            return False
        return self.regex.fullmatch("/".join(parts) if self.anchored else parts[-1]) is not None


def compile_pattern(line: str) -> Pattern | None:
    """A .gitignore line as a Pattern; None for blank lines and comments (gitignore(5) syntax:
    `*`, `?`, `[...]`, `**`, leading `!`, trailing `/`, `\\` escapes)."""
    s = line.rstrip("\r\n")
    if not s or s.startswith("#"):
        return None
    while s.endswith(" ") and not s.endswith("\\ "):
        s = s[:-1]
    negate = s.startswith("!")
    if negate:
        s = s[1:]
    dir_only = s.endswith("/")
    if dir_only:
        s = s[:-1]
    anchored = "/" in s
    s = s.removeprefix("/")
    if not s:
        return None
    parts = [
        p for i, p in enumerate(s.split("/")) if not (p == "**" and i > 0 and s.split("/")[i - 1] == "**")
    ]
    literal: list[str] = []
    for p in parts:
        if _GLOB_CHARS.search(p):
            break
        literal.append(p)
    return Pattern(
        line.strip(),
        re.compile(_translate(parts), re.DOTALL),
        negate,
        dir_only,
        anchored,
        tuple(literal) if anchored else (),
    )


def _translate(parts: list[str]) -> str:
    rx = ""
    n = len(parts)
    for i, part in enumerate(parts):
        first, last = i == 0, i == n - 1
        if part == "**":
            rx += ".*" if first and last else "(?:.*/)?" if first else "/.*" if last else "/(?:.*/)?"
            continue
        if not first and parts[i - 1] != "**":
            rx += "/"
        rx += _translate_segment(part)
    return rx


def _translate_segment(seg: str) -> str:
    out = ""
    i = 0
    while i < len(seg):
        c = seg[i]
        if c == "\\" and i + 1 < len(seg):
            out += re.escape(seg[i + 1])
            i += 2
            continue
        if c == "*":
            while i + 1 < len(seg) and seg[i + 1] == "*":
                i += 1
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = i + 1
            if j < len(seg) and seg[j] in "!^":
                j += 1
            if j < len(seg) and seg[j] == "]":
                j += 1
            while j < len(seg) and seg[j] != "]":
                j += 1
            if j >= len(seg):
                out += re.escape(c)
            else:
                body = seg[i + 1 : j]
                neg = body[:1] in ("!", "^")
                if neg:
                    body = body[1:]
                body = "".join(ch if ch == "-" else re.escape(ch) for ch in body)
                out += f"[^/{body}]" if neg else f"[{body}]"
                i = j
        else:
            out += re.escape(c)
        i += 1
    return out


class PatternList(tuple[Pattern, ...]):
    """Patterns in file order; without negations, matched with one combined regex per kind (a 50,000-file
    tree asks about every folder)."""

    simple: bool
    _alts: tuple[re.Pattern[str] | None, ...]

    def __new__(cls, patterns: Iterable[Pattern]) -> PatternList:
        self = super().__new__(cls, patterns)
        self.simple = not any(p.negate for p in self)

        def alt(anchored: bool, dir_only: bool) -> re.Pattern[str] | None:
            rx = [p.regex.pattern for p in self if p.anchored == anchored and p.dir_only == dir_only]
            return re.compile("|".join(f"(?:{x})" for x in rx), re.DOTALL) if rx else None

        self._alts = (alt(False, False), alt(False, True), alt(True, False), alt(True, True))
        return self

    def any_match(self, parts: tuple[str, ...], is_dir: bool) -> bool:
        base_any, base_dir, full_any, full_dir = self._alts
        if base_any is not None and base_any.fullmatch(parts[-1]):
            return True
        if is_dir and base_dir is not None and base_dir.fullmatch(parts[-1]):
            return True
        if full_any is None and (full_dir is None or not is_dir):
            return False
        joined = "/".join(parts)
        if full_any is not None and full_any.fullmatch(joined):
            return True
        return bool(is_dir and full_dir is not None and full_dir.fullmatch(joined))


def compile_patterns(lines: Iterable[str]) -> PatternList:
    return PatternList(p for p in (compile_pattern(x) for x in lines) if p is not None)


def decide(patterns: Iterable[Pattern], parts: tuple[str, ...], is_dir: bool) -> bool | None:
    """The last matching pattern's verdict for this one path (True = matched, False = negated), or
    None when no pattern matches. Ancestors are the caller's business."""
    if not parts:
        return None
    if isinstance(patterns, PatternList) and patterns.simple:
        return True if patterns.any_match(parts, is_dir) else None
    verdict = None
    for p in patterns:
        if p.matches(parts, is_dir):
            verdict = not p.negate
    return verdict


def list_matches(patterns: tuple[Pattern, ...], parts: tuple[str, ...], is_dir: bool) -> bool:
    """gitignore semantics for one pattern list: a path matches when it or one of its folders does."""
    for k in range(1, len(parts)):
        if decide(patterns, parts[:k], True):
            return True
    return bool(decide(patterns, parts, is_dir))


DEFAULT_IGNORE = compile_patterns(model.DEFAULT_WATCH_IGNORE)


class GitIgnore:
    """The .gitignore files of one tree (and .git/info/exclude), read lazily and cached.

    `base` is the repository root (the nearest folder holding .git), or the project root outside git.
    Deeper files override shallower ones and later lines earlier ones, as in git."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._files: dict[tuple[str, ...], tuple[Pattern, ...]] = {}
        self._dirs: dict[tuple[str, ...], bool] = {}

    def invalidate(self) -> None:
        self._files.clear()
        self._dirs.clear()

    def rel(self, path: str) -> tuple[str, ...] | None:
        b = os.fspath(self.base)
        if path == b:
            return ()
        if not path.startswith(b.rstrip("/") + "/"):
            return None
        return tuple(path[len(b.rstrip("/")) + 1 :].split("/"))

    def _patterns_in(self, d: tuple[str, ...]) -> tuple[Pattern, ...]:
        pats = self._files.get(d)
        if pats is None:
            lines: list[str] = []
            names = [".git/info/exclude", ".gitignore"] if not d else [".gitignore"]
            for name in names:
                lines += _read_small(os.path.join(os.fspath(self.base), *d, name))
            pats = self._files[d] = compile_patterns(lines)
        return pats

    def decide_level(self, parts: tuple[str, ...], is_dir: bool) -> bool:
        """Whether the patterns ignore this path itself (its folders are not looked at)."""
        verdict = False
        for k in range(len(parts)):
            v = decide(self._patterns_in(parts[:k]), parts[k:], is_dir)
            if v is not None:
                verdict = v
        return verdict

    def ignored(self, parts: tuple[str, ...], is_dir: bool) -> bool:
        """git's answer: ignored when the path or one of its folders is."""
        for k in range(1, len(parts)):
            d = parts[:k]
            hit = self._dirs.get(d)
            if hit is None:
                hit = self._dirs[d] = self.decide_level(d, True)
            if hit:
                return True
        return self.decide_level(parts, is_dir)


def _read_small(path: str, limit: int = 1 << 20) -> list[str]:
    """Lines of a small text file, never following a symlink at the last component."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return []
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        data = os.read(fd, limit)
    except OSError:
        return []
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace").splitlines()


def git_base(path: Path, fallback: Path) -> Path:
    """The nearest folder at or above `path` that holds .git; `fallback` when there is none."""
    for d in [path, *path.parents]:
        if os.path.lexists(d / ".git"):
            return d
    return fallback


# --------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class ActionKey:
    """What runs: rules of one box with the same action share one key (and one debounce)."""

    box: str
    action: str  # a WatchAction value, or "reload" for the Devboxfile
    args: tuple[str, ...] = ()
    source: str = ""  # sync only: the rule's path (two sync rules are two actions)

    @property
    def boxes(self) -> frozenset[str]:
        return frozenset({"*"}) if self.action == RELOAD else frozenset({self.box})

    @property
    def priority(self) -> int:
        return {RELOAD: 0, "rebuild": 1, "sync": 2, "exec": 3}.get(self.action, 4)

    def describe(self) -> str:
        if self.action == RELOAD:
            return "project: up"
        args = self.args[2:] if self.action == "exec" and self.args[:2] == ("/bin/sh", "-c") else self.args
        return f"{self.box}: {self.action} {' '.join(args)}".rstrip()


RELOAD = "reload"
RELOAD_KEY = ActionKey("*", RELOAD)


class Rule:
    """A WatchRule of one box, compiled: which folders to watch and which changes count.

    A change at the rule's own path always counts. Below it, a path counts when it is not ignored and,
    if the rule has `include` globs, matches one of them. Ignored = matched by the rule's `ignore`, or by
    the defaults or a .gitignore unless an `include` glob names it (its leading literal folders, as in
    `include: [build/app.war]`). Globs use .gitignore syntax relative to the rule's path."""

    def __init__(
        self, box: str, rule: model.WatchRule, gitignore: GitIgnore | None, project_root: Path | None = None
    ) -> None:
        self.box = box
        self.rule = rule
        self.root = os.path.normpath(os.fspath(rule.path))
        self.include = compile_patterns(rule.include)
        self.ignore = compile_patterns(rule.ignore)
        self.gitignore = gitignore
        self.key = ActionKey(
            box, str(rule.action), tuple(rule.args), self.root if rule.action is WatchAction.SYNC else ""
        )
        self._named = [p.literal for p in self.include if p.anchored and not p.negate and p.literal]
        self._reach_anywhere = not self.include or any(
            not p.anchored or not p.literal for p in self.include if not p.negate
        )
        self._dir_cache: dict[tuple[str, ...], bool] = {}
        # the highest folder watched for this rule: the path's parent (to see the path itself replaced),
        # or the nearest one that exists; the project's root is its own top
        top = (
            self.root
            if project_root is not None and self.root == os.fspath(project_root)
            else (os.path.dirname(self.root) or "/")
        )
        while not os.path.isdir(top) and top != "/":
            top = os.path.dirname(top)
        self.top = top

    def invalidate(self) -> None:
        self._dir_cache.clear()

    def rel(self, path: str) -> tuple[str, ...] | None:
        if path == self.root:
            return ()
        prefix = self.root.rstrip("/") + "/"
        return tuple(path[len(prefix) :].split("/")) if path.startswith(prefix) else None

    def _names(self, parts: tuple[str, ...]) -> bool:
        return any(len(parts) <= len(lit) and lit[: len(parts)] == parts for lit in self._named)

    def _level_excluded(self, parts: tuple[str, ...], is_dir: bool) -> bool:
        if self.ignore and decide(self.ignore, parts, is_dir):
            return True
        if decide(DEFAULT_IGNORE, parts, is_dir) or self._gitignored(parts, is_dir):
            return not self._names(parts)
        return False

    def _gitignored(self, parts: tuple[str, ...], is_dir: bool) -> bool:
        if self.gitignore is None:
            return False
        gparts = self.gitignore.rel(os.path.join(self.root, *parts))
        return gparts is not None and self.gitignore.decide_level(gparts, is_dir)

    def _dir_excluded(self, parts: tuple[str, ...]) -> bool:
        hit = self._dir_cache.get(parts)
        if hit is None:
            hit = self._dir_cache[parts] = self._level_excluded(parts, True)
        return hit

    def excluded(self, parts: tuple[str, ...], is_dir: bool) -> bool:
        for k in range(1, len(parts)):
            if self._dir_excluded(parts[:k]):
                return True
        return self._level_excluded(parts, is_dir)

    def _reachable(self, parts: tuple[str, ...]) -> bool:
        """Can an include glob match something in this folder (or the folder itself)?"""
        if self._reach_anywhere:
            return True
        n = len(parts)
        return any(lit[: min(n, len(lit))] == parts[: min(n, len(lit))] for lit in self._named)

    def matches(self, path: str, is_dir: bool) -> bool:
        parts = self.rel(path)
        if parts is None:
            return False
        if not parts:
            return True
        if self.excluded(parts, is_dir):
            return False
        return not self.include or list_matches(self.include, parts, is_dir)

    def wants_dir(self, path: str) -> bool:
        """Should this folder be watched for this rule?"""
        parts = self.rel(path)
        if parts is None:
            # the folders from `top` down to the rule's path, to see it (re)appear
            return path == self.top or (
                path.startswith(self.top.rstrip("/") + "/") and self.root.startswith(path.rstrip("/") + "/")
            )
        if not parts:
            return True
        for k in range(1, len(parts) + 1):
            if self._dir_excluded(parts[:k]):
                return False
        return self._reachable(parts)

    def describe(self, base: Path | None = None) -> str:
        shown = self.root
        if base is not None and (self.root + "/").startswith(os.fspath(base).rstrip("/") + "/"):
            shown = "./" + os.path.relpath(self.root, base) if self.root != os.fspath(base) else "."
        bits = []
        if self.rule.include:
            bits.append("include " + ", ".join(self.rule.include))
        if self.rule.ignore:
            bits.append("ignore " + ", ".join(self.rule.ignore))
        what = self.key.describe().removeprefix(f"{self.box}: ")
        return shown + (f" ({'; '.join(bits)})" if bits else "") + f" -> {what}"


def compile_rules(project: model.Project, boxes: Iterable[str]) -> list[Rule]:
    bases: dict[Path, GitIgnore] = {}
    out = []
    for name in boxes:
        for r in project.boxes[name].watch:
            base = git_base(Path(r.path), project.root)
            gi = bases.get(base)
            if gi is None:
                gi = bases[base] = GitIgnore(base)
            out.append(Rule(name, r, gi, project.root))
    return out


# --------------------------------------------------------------------------------------------- debounce


@dataclass
class Job:
    key: ActionKey
    paths: frozenset[str]
    full: bool = False  # sync: copy the whole tree (start, overflow, box recreated)
    started: float = 0.0


@dataclass
class _Slot:
    paths: set[str] = field(default_factory=set)
    first: float | None = None
    last: float | None = None
    full: bool = False
    running: bool = False

    @property
    def pending(self) -> bool:
        return self.first is not None


class Scheduler:
    """Debounce and queueing, with the clock passed in (pure: no threads, no sleeps).

    touch() records a change for a key; due(now) hands out the jobs to start now; finished(key) ends
    one. A key runs once at a time; changes while it runs make one follow-up job."""

    def __init__(self, quiet: float = QUIET, max_delay: float = MAX_DELAY) -> None:
        self.quiet = quiet
        self.max_delay = max_delay
        self.slots: dict[ActionKey, _Slot] = {}

    def touch(self, key: ActionKey, path: str | None, now: float, full: bool = False) -> None:
        s = self.slots.setdefault(key, _Slot())
        if path is not None:
            s.paths.add(path)
        s.full = s.full or full
        if s.first is None:
            s.first = now
        s.last = now

    def _ready(self, s: _Slot, now: float) -> bool:
        assert s.first is not None and s.last is not None
        return now - s.last >= self.quiet or now - s.first >= self.max_delay

    def running(self) -> list[ActionKey]:
        return [k for k, s in self.slots.items() if s.running]

    def due(self, now: float) -> list[Job]:
        busy: set[str] = set()
        for k in self.running():
            busy |= k.boxes
        reserved: set[str] = set()
        out = []
        for key in sorted(
            (k for k, s in self.slots.items() if s.pending and not s.running), key=lambda k: k.priority
        ):
            s = self.slots[key]
            if not self._ready(s, now):
                continue
            if _conflict(key.boxes, busy) or _conflict(key.boxes, reserved):
                reserved |= key.boxes  # waits; lower-priority work on these boxes waits behind it
                continue
            out.append(Job(key, frozenset(s.paths), s.full, now))
            s.paths, s.first, s.last, s.full, s.running = set(), None, None, False, True
            busy |= key.boxes
        return out

    def finished(self, key: ActionKey) -> None:
        s = self.slots.get(key)
        if s is not None:
            s.running = False

    def next_deadline(self) -> float | None:
        """When due() may next return something (None: only a new event or a finished job can)."""
        times = [
            min(s.last + self.quiet, s.first + self.max_delay)
            for s in self.slots.values()
            if s.pending and not s.running and s.first is not None and s.last is not None
        ]
        return min(times) if times else None

    def idle(self) -> bool:
        return not any(s.pending or s.running for s in self.slots.values())


def _conflict(a: frozenset[str] | set[str], b: frozenset[str] | set[str]) -> bool:
    return bool(a & b) or ("*" in a and bool(b)) or ("*" in b and bool(a))


# --------------------------------------------------------------------------------------------- inotify


IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
WATCH_MASK = (
    IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
    | IN_EXCL_UNLINK
)

WATCHES_SYSCTL = "fs.inotify.max_user_watches"
INSTANCES_SYSCTL = "fs.inotify.max_user_instances"
QUEUE_SYSCTL = "fs.inotify.max_queued_events"


def sysctl_value(name: str) -> str:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return "?"


class WatchLimit(errors.DevboxError):
    """The kernel refused an inotify watch or instance."""


def watch_limit_error(err: OSError, count: int) -> WatchLimit:
    if err.errno == errno.ENOSPC:
        cur = sysctl_value(WATCHES_SYSCTL)
        want = max(524288, 2 * int(cur)) if cur.isdigit() else 524288
        ns = sysctl_value("user.max_inotify_watches")  # this user namespace's own limit
        extra = f", user.max_inotify_watches = {ns} in this user namespace" if ns not in (cur, "?") else ""
        return WatchLimit(
            f"the inotify watch limit is reached after {count} folders ({WATCHES_SYSCTL} = {cur}{extra}); "
            "changes in the other folders would be missed",
            hint=f"raise it: sudo sysctl {WATCHES_SYSCTL}={want} (persist it in /etc/sysctl.d/), "
            "or ignore big folders in the watch rules",
        )
    cur = sysctl_value(INSTANCES_SYSCTL)
    want = max(1024, 2 * int(cur)) if cur.isdigit() else 1024
    return WatchLimit(
        f"cannot create an inotify instance ({INSTANCES_SYSCTL} = {cur}, or the open-file limit): "
        f"{err.strerror}",
        hint=f"raise it: sudo sysctl {INSTANCES_SYSCTL}={want}, or stop other file watchers",
    )


class Source(Protocol):
    """Where raw events come from: watchdog's InotifyFD in real life, a fake in unit tests.

    Items put on the queue: ("ev", wd, mask, name: bytes), ("gone", wd), ("overflow",)."""

    def start(self, q: queue.Queue[tuple[Any, ...]]) -> None: ...

    def add(self, path: str) -> int: ...

    def remove(self, wd: int) -> None: ...

    def stop(self) -> None: ...


class InotifySource:
    """One watchdog InotifyFD (one inotify instance, one reader thread); its callbacks only queue."""

    def __init__(self) -> None:
        self._fd: Any = None
        self._q: queue.Queue[tuple[Any, ...]] | None = None
        self._ids: dict[int, int] = {}
        self._next = 0

    # the WatchCallback protocol; runs on the inotify thread and only queues
    def on_event(self, event: Any) -> None:
        assert self._q is not None
        self._q.put(("ev", int(event.wd), int(event.mask), bytes(event.name)))

    def on_watch_deleted(self, wd: int) -> None:
        assert self._q is not None
        self._q.put(("gone", int(wd)))

    def on_queue_overflow(self) -> None:
        assert self._q is not None
        self._q.put(("overflow",))

    def start(self, q: queue.Queue[tuple[Any, ...]]) -> None:
        from watchdog.observers.inotify_c import InotifyFD

        self._q = q
        try:
            self._fd = InotifyFD()
        except OSError as e:
            raise watch_limit_error(e, 0) from None
        with contextlib.suppress(Exception):
            os.set_inheritable(self._fd._inotify_fd, False)
        self._fd.name = "devbox-watch-inotify"
        self._fd.start()

    def add(self, path: str) -> int:
        """A watch on one folder (not recursive); its wd. OSError when the kernel refuses."""
        from watchdog.observers.inotify_c import CallbackId, Mask

        self._next += 1
        cid = self._next
        wd = int(self._fd.add_callback(os.fsencode(path), Mask(WATCH_MASK), self, CallbackId(cid)))
        if wd < 0:  # watchdog passes EACCES through as wd -1
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        if wd in self._ids:  # the same folder under another path (a bind mount): keep the first
            self._fd.remove_callbacks([(wd, CallbackId(cid))])
            raise FileExistsError(errno.EEXIST, "already watched", path)
        self._ids[wd] = cid
        return wd

    def remove(self, wd: int) -> None:
        from watchdog.observers.inotify_c import CallbackId

        cid = self._ids.pop(wd, None)
        if cid is not None:
            with contextlib.suppress(OSError):
                self._fd.remove_callbacks([(wd, CallbackId(cid))])

    def forget(self, wd: int) -> None:
        self._ids.pop(wd, None)

    def stop(self) -> None:
        if self._fd is not None:
            self._fd.stop()
            self._fd.join(timeout=5)
            self._fd = None


# --------------------------------------------------------------------------------------------- output


class Reporter:
    """Timestamped lines on stderr (progress, not data); safe to call from any thread."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def line(self, msg: str) -> None:
        t = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
        with self._lock:
            s = self.stream or sys.stderr
            print(f"{stamp} {msg}", file=s, flush=True)

    def raw(self, msg: str) -> None:
        with self._lock:
            print(msg, file=self.stream or sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- actions


class ActionFailed(errors.DevboxError):
    def __init__(self, message: str, output: list[str] | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.output = output or []


class Runner(Protocol):
    def run(self, job: Job, ctx: WatchContext) -> str:
        """Do the job; return a short detail for the outcome line; raise on failure."""
        ...

    def interrupt(self, sig: int = signal.SIGINT) -> None:
        """Interrupt whatever runs (second Ctrl-C): SIGINT first, SIGKILL if that is not enough."""
        ...


@dataclass
class WatchContext:
    """What the runner may read (replaced as a whole on reload; read-only for workers)."""

    file: Path
    project: model.Project
    boxes: list[str]  # the boxes asked for (empty = all)
    rules: list[Rule]


def _devbox_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "devbox", *args]


def _exec_argv(container_id: str, user: str | None, cwd: str | None, argv: Iterable[str]) -> list[str]:
    """The helper child that runs `argv` in a box (see _helper_main): `devbox exec` without the CLI's
    start-up cost (typer), so an exec or sync action costs ~0.3 s less."""
    return [sys.executable, "-m", "devbox.watch", "exec", container_id, user or "", cwd or "", "--", *argv]


class BoxRunner:
    """The real actions. Worker threads call run(); nothing here forks except through Popen."""

    def __init__(self, out: Reporter, verbose: bool = False) -> None:
        self.out = out
        self.verbose = verbose
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    def run(self, job: Job, ctx: WatchContext) -> str:
        k = job.key
        if k.action == RELOAD:
            return self._child(_devbox_argv("up", "--file", os.fspath(ctx.file), *ctx.boxes), ctx, "up")
        if k.action == "rebuild":
            return self._child(_devbox_argv("up", "--file", os.fspath(ctx.file), k.box), ctx, k.box)
        c = self._container(ctx, k.box)
        if k.action in ("restart", "signal"):
            from devbox import orchestrator

            client = orchestrator.client_for(c)
            svc = k.args[0]
            if k.action == "signal":
                client.signal(svc, k.args[1])
                return f"sent SIG{k.args[1]} to pid {client.info(svc).pid}"
            old = client.info(svc).pid
            try:
                client.restart(svc)
            except errors.DevboxError as e:
                try:  # what the service said before it failed
                    tail = client.tail(svc, "stderr", 4000).splitlines()[-OUTPUT_TAIL:]
                except errors.DevboxError:
                    tail = []
                raise ActionFailed(e.message, output=tail, hint=e.hint) from None
            return f"pid {old or '-'} -> {client.info(svc).pid}"
        box = ctx.project.boxes[k.box]
        if k.action == "exec":
            return self._child(_exec_argv(c.id, box.user, box.workdir, k.args), ctx, k.box, cwd="/")
        if k.action == "sync":
            rule = next((r for r in ctx.rules if r.key == k), None)
            if rule is None:
                return "rule gone"
            return self._sync(rule, job, c, ctx)
        raise ActionFailed(f"unknown action {k.action}")

    def _container(self, ctx: WatchContext, box: str) -> Any:
        from devbox import orchestrator
        from devbox.runtime import container as ct

        c = orchestrator.box_container(ctx.project, box)
        if c is None or c.refresh() != ct.RUNNING:
            raise ActionFailed(f"box {box} is not running", hint=f"devbox up {box}")
        return c

    def _child(
        self, argv: list[str], ctx: WatchContext, label: str, stdin: Any = None, cwd: str | None = None
    ) -> str:
        tail: deque[str] = deque(maxlen=OUTPUT_TAIL)
        proc = subprocess.Popen(
            argv,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd or os.fspath(ctx.project.root),
            process_group=0,
        )
        with self._lock:
            self._procs.add(proc)
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                text = raw.decode("utf-8", "replace").rstrip("\n")
                tail.append(text)
                if self.verbose:
                    self.out.raw(f"    {label}| {text}")
            code = proc.wait()
        finally:
            with self._lock:
                self._procs.discard(proc)
        if code != 0:
            raise ActionFailed(f"exit code {code}", output=list(tail))
        return tail[-1].strip() if tail and argv[3:4] == ["up"] else "exit 0"

    def _sync(self, rule: Rule, job: Job, c: Any, ctx: WatchContext) -> str:
        dest = rule.rule.args[0]
        dest_dir = dest if os.path.isdir(rule.root) else os.path.dirname(dest) or "/"
        with tempfile.TemporaryFile() as tmp:
            added, deleted = build_sync_tar(rule, job.paths, job.full, tmp)
            tmp.seek(0)
            # runs in the box, as root of the box: its own symlinks resolve inside its own root
            script = (
                'set -e; d="$1"; shift; mkdir -p -- "$d"; cd -- "$d"; '
                'for p in "$@"; do rm -rf -- "./$p"; done; tar -x -o -f -'
            )
            self._child(
                _exec_argv(c.id, None, "/", ["/bin/sh", "-c", script, "sh", dest_dir, *deleted]),
                ctx,
                rule.box,
                stdin=tmp,
                cwd="/",
            )
        return f"{added} copied, {len(deleted)} removed -> {dest}"

    def interrupt(self, sig: int = signal.SIGINT) -> None:
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, sig)


def build_sync_tar(rule: Rule, paths: Iterable[str], full: bool, out: Any) -> tuple[int, list[str]]:
    """Write a tar of what to copy for a sync rule into `out`; return (entries written, relative paths to
    remove in the box). Host symlinks are archived as symlinks, never followed; special files are
    skipped. For a rule whose path is a file the one member is named after the destination."""
    root = rule.root
    dest = rule.rule.args[0]
    deleted: list[str] = []
    count = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:

        def add(abs_path: str, arcname: str) -> bool:
            try:
                st = os.lstat(abs_path)
            except OSError:
                return False
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                return False
            ti = tarfile.TarInfo(arcname)
            ti.mode, ti.mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
            if stat.S_ISDIR(st.st_mode):
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif stat.S_ISLNK(st.st_mode):
                ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(abs_path)
                tf.addfile(ti)
            else:
                try:
                    fd = os.open(abs_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
                except OSError:
                    return False
                with os.fdopen(fd, "rb") as f:
                    st = os.fstat(f.fileno())
                    if not stat.S_ISREG(st.st_mode):
                        return False
                    data = f.read()
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            return True

        if not os.path.isdir(root):
            if not os.path.lexists(root):
                deleted.append(os.path.basename(dest))
            elif add(root, os.path.basename(dest)):
                count += 1
            return count, deleted
        if full:
            todo: Iterable[str] = [root]
        else:
            todo = sorted(set(paths))
        for p in todo:
            parts = rule.rel(p)
            if parts is None:
                continue
            if not os.path.lexists(p):
                if parts:
                    deleted.append("/".join(parts))
                continue
            if os.path.isdir(p) and not os.path.islink(p):
                for d, files in _walk_rule(rule, p):
                    dparts = rule.rel(d) or ()
                    if dparts and add(d, "/".join(dparts)):
                        count += 1
                    for name in files:
                        fp = os.path.join(d, name)
                        if rule.matches(fp, False) and add(fp, "/".join((*dparts, name))):
                            count += 1
            elif parts and add(p, "/".join(parts)):
                count += 1
    return count, deleted


def _walk_rule(rule: Rule, top: str) -> Iterator[tuple[str, list[str]]]:
    stack = [top]
    while stack:
        d = stack.pop()
        files = []
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        is_dir = e.is_dir(follow_symlinks=False)
                    except OSError:
                        continue
                    if is_dir:
                        if rule.wants_dir(e.path):
                            stack.append(e.path)
                    else:
                        files.append(e.name)
        except OSError:
            continue
        yield d, sorted(files)


# --------------------------------------------------------------------------------------------- watcher


class Watcher:
    """The main-thread half: watches, events -> rules -> scheduler -> jobs on worker threads."""

    def __init__(
        self,
        file: Path,
        boxes: list[str] | None,
        *,
        runner: Runner,
        source: Source | None = None,
        out: Reporter | None = None,
        clock: Callable[[], float] = time.monotonic,
        quiet: float = QUIET,
        max_delay: float = MAX_DELAY,
        start_job: Callable[[Job], None] | None = None,
    ) -> None:
        self.file = Path(file).resolve()
        self.want_boxes = list(boxes or [])
        self.runner = runner
        self.source: Source = source if source is not None else InotifySource()
        self.out = out or Reporter()
        self.clock = clock
        self.sched = Scheduler(quiet, max_delay)
        self.q: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.start_job = start_job or self._thread_job
        self.wd_path: dict[int, str] = {}
        self.path_wd: dict[str, int] = {}
        self.ctx: WatchContext | None = None
        self.file_digest = ""
        self._rescan = False
        self.warned: set[str] = set()

    # ---- rules and watches ------------------------------------------------------------------------

    def load(self) -> WatchContext:
        from devbox import orchestrator

        raw = self.file.read_bytes()
        project = orchestrator.load(self.file)
        names = self.want_boxes or list(project.boxes)
        for b in names:
            if b not in project.boxes:
                import difflib

                close = difflib.get_close_matches(b, list(project.boxes), 1)
                raise errors.ConfigError(
                    f"no box named {b!r} in {self.file.name}",
                    hint=f"did you mean {close[0]!r}?" if close else f"boxes: {', '.join(project.boxes)}",
                )
        self.file_digest = hashlib.sha256(raw).hexdigest()
        return WatchContext(self.file, project, list(self.want_boxes), compile_rules(project, names))

    def wanted(self, path: str) -> bool:
        assert self.ctx is not None
        if path == os.fspath(self.file.parent):
            return True
        return any(r.wants_dir(path) for r in self.ctx.rules)

    def wanted_dirs(self) -> list[str]:
        """Every folder to watch, walked from the tops with pruning (never through symlinks)."""
        assert self.ctx is not None
        tops = {os.fspath(self.file.parent)} | {r.top for r in self.ctx.rules}
        seen: set[str] = set()
        out = []
        stack = sorted(tops, reverse=True)
        while stack:
            d = stack.pop()
            if d in seen:
                continue
            seen.add(d)
            out.append(d)
            try:
                with os.scandir(d) as it:
                    for e in it:
                        try:
                            if (
                                e.is_dir(follow_symlinks=False)
                                and e.path not in seen
                                and self.wanted(e.path)
                            ):
                                stack.append(e.path)
                        except OSError:
                            continue
            except OSError:
                continue
        return out

    def _add(self, path: str) -> bool:
        if path in self.path_wd:
            return False
        try:
            wd = self.source.add(path)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EMFILE):
                raise watch_limit_error(e, len(self.path_wd)) from None
            if e.errno in (errno.EACCES, errno.EPERM) and path not in self.warned:
                self.warned.add(path)
                self.out.line(f"warning: cannot watch {path}: {e.strerror}")
            return False
        old = self.wd_path.get(wd)
        if old is not None:
            self.path_wd.pop(old, None)
        self.wd_path[wd] = path
        self.path_wd[path] = wd
        return True

    def _drop_tree(self, path: str) -> None:
        prefix = path.rstrip("/") + "/"
        for p in [p for p in self.path_wd if p == path or p.startswith(prefix)]:
            wd = self.path_wd.pop(p)
            self.wd_path.pop(wd, None)
            self.source.remove(wd)

    def sync_watches(self) -> None:
        """Make the watched set what the rules want (start, reload, .gitignore change, overflow)."""
        want = self.wanted_dirs()
        wanted = set(want)
        for p in [p for p in self.path_wd if p not in wanted]:
            wd = self.path_wd.pop(p)
            self.wd_path.pop(wd, None)
            self.source.remove(wd)
        for p in want:
            self._add(p)

    def _add_tree(self, path: str, now: float) -> None:
        """A folder appeared: watch it (and its wanted subfolders), then report what is in it."""
        stack = [path]
        while stack:
            d = stack.pop()
            if not self._add(d):
                continue
            try:
                with os.scandir(d) as it:
                    entries = list(it)
            except OSError:
                continue
            for e in entries:
                try:
                    is_dir = e.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                self.changed(e.path, is_dir, now)
                if is_dir and self.wanted(e.path):
                    stack.append(e.path)

    # ---- events -----------------------------------------------------------------------------------

    def changed(self, path: str, is_dir: bool, now: float) -> None:
        assert self.ctx is not None
        if path == os.fspath(self.file):
            self.sched.touch(RELOAD_KEY, path, now)
        if os.path.basename(path) == ".gitignore" or path.endswith("/.git/info/exclude"):
            self._rescan = True
        for r in self.ctx.rules:
            if r.matches(path, is_dir):
                self.sched.touch(r.key, path, now)

    def handle(self, item: tuple[Any, ...], now: float) -> None:
        kind = item[0]
        if kind == "gone":
            path = self.wd_path.pop(item[1], None)
            if path is not None:
                self.path_wd.pop(path, None)
            forget = getattr(self.source, "forget", None)
            if forget is not None:
                forget(item[1])
            return
        if kind == "overflow":
            self.out.line(
                f"warning: the kernel's inotify queue overflowed ({QUEUE_SYSCTL} = "
                f"{sysctl_value(QUEUE_SYSCTL)}): rescanning, and every rule runs once"
            )
            self.overflow(now)
            return
        if kind == "done":
            self._done(item[1], item[2], item[3], item[4], now)
            return
        _, wd, mask, name = item
        d = self.wd_path.get(wd)
        if d is None:
            return
        if not name:
            if mask & IN_MOVE_SELF:  # its path is stale; the parent's IN_MOVED_TO watches it again
                self._drop_tree(d)
            return
        path = os.path.join(d, os.fsdecode(name))
        is_dir = bool(mask & IN_ISDIR)
        if is_dir and mask & (IN_MOVED_FROM | IN_DELETE):
            self._drop_tree(path)
        if mask & IN_CREATE and not is_dir:
            try:
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode) and st.st_size == 0 and st.st_nlink == 1:
                    return  # a new, empty file: its IN_CLOSE_WRITE follows (a new hard link counts now)
            except OSError:
                pass
        if is_dir and mask & (IN_CREATE | IN_MOVED_TO) and self.wanted(path):
            try:
                self._add_tree(path, now)
            except WatchLimit as e:
                if "limit" not in self.warned:
                    self.warned.add("limit")
                    self.out.line(f"error: {e.message}; {e.hint}")
        self.changed(path, is_dir, now)

    def overflow(self, now: float) -> None:
        assert self.ctx is not None
        self.sync_watches()
        self.sched.touch(RELOAD_KEY, None, now)
        for r in self.ctx.rules:
            self.sched.touch(r.key, None, now, full=True)

    # ---- jobs -------------------------------------------------------------------------------------

    def dispatch(self, now: float) -> None:
        if self._rescan:
            self._rescan = False
            assert self.ctx is not None
            for r in self.ctx.rules:
                if r.gitignore is not None:
                    r.gitignore.invalidate()
                r.invalidate()
            self.sync_watches()
        for job in self.sched.due(now):
            if job.key.action == RELOAD and not self._reload_rules():
                self.sched.finished(job.key)
                continue
            self.out.line(f"{job.key.describe()}{_why(job)}")
            self.start_job(job)

    def _reload_rules(self) -> bool:
        """Re-read the Devboxfile for a reload job; False when there is nothing to do."""
        try:
            digest = hashlib.sha256(self.file.read_bytes()).hexdigest()
        except OSError as e:
            self.out.line(f"Devboxfile: cannot read {self.file}: {e.strerror}; keeping the previous rules")
            return False
        if digest == self.file_digest:
            return False
        try:
            ctx = self.load()
        except errors.DevboxError as e:
            self.file_digest = digest
            self.out.line(
                f"Devboxfile: {e.message}"
                + (f" ({e.hint})" if e.hint else "")
                + "; keeping the previous rules"
            )
            return False
        self.ctx = ctx
        keys = {r.key for r in ctx.rules} | {RELOAD_KEY}
        for k in [k for k, slot in self.sched.slots.items() if k not in keys and not slot.running]:
            del self.sched.slots[k]  # pending work of rules that are gone
        self.sync_watches()
        self.out.line(
            f"Devboxfile: {len(ctx.rules)} watch rule(s) for {', '.join(self.boxes()) or 'no box'}"
        )
        return True

    def boxes(self) -> list[str]:
        assert self.ctx is not None
        return self.want_boxes or list(self.ctx.project.boxes)

    def _thread_job(self, job: Job) -> None:
        ctx = self.ctx
        assert ctx is not None

        def work() -> None:
            t0 = time.monotonic()
            try:
                detail = self.runner.run(job, ctx)
                res: tuple[bool, str, list[str]] = (True, detail, [])
            except errors.DevboxError as e:
                msg = e.message + (f" ({e.hint})" if e.hint else "")
                res = (False, msg, getattr(e, "output", []))
            except Exception as e:  # noqa: BLE001  an action's failure must not end the watch
                res = (False, f"{type(e).__name__}: {e}", [])
            self.q.put(("done", job, res, time.monotonic() - t0, None))

        threading.Thread(
            target=work, name=f"devbox-watch-{job.key.box}-{job.key.action}", daemon=True
        ).start()

    def _done(self, job: Job, res: tuple[bool, str, list[str]], elapsed: float, _x: Any, now: float) -> None:
        ok, detail, output = res
        self.sched.finished(job.key)
        verdict = "ok" if ok else "FAILED"
        self.out.line(
            f"{job.key.describe()}: {verdict} in {elapsed:.2f}s" + (f": {detail}" if detail else "")
        )
        for line in output:
            self.out.raw(f"    | {line}")
        if ok and job.key.action in (RELOAD, "rebuild") and self.ctx is not None:
            # the box may have been recreated from its image: copy the synced trees again
            for r in self.ctx.rules:
                if r.key.action == "sync" and (job.key.action == RELOAD or r.box == job.key.box):
                    self.sched.touch(r.key, None, now, full=True)

    # ---- running ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.ctx = self.load()
        t0 = time.monotonic()
        self.source.start(self.q)
        try:
            self.sync_watches()
        except BaseException:
            self.source.stop()
            raise
        took = time.monotonic() - t0
        for r in self.ctx.rules:
            self.out.line(f"{r.box}: {r.describe(self.ctx.project.root)}")
            if r.key.action == "sync":
                self.sched.touch(r.key, None, self.clock(), full=True)
        if not self.ctx.rules:
            self.out.line(f"no watch rules for {', '.join(self.boxes())}: watching the Devboxfile only")
        self.out.line(f"watching {len(self.path_wd)} folder(s) ({took * 1000:.0f} ms); Ctrl-C to stop")

    def step(self, timeout: float | None) -> None:
        try:
            item = self.q.get(timeout=timeout) if timeout is None or timeout > 0 else self.q.get_nowait()
        except queue.Empty:
            item = None
        now = self.clock()
        while item is not None:
            self.handle(item, now)
            try:
                item = self.q.get_nowait()
            except queue.Empty:
                item = None
        self.dispatch(self.clock())

    def run(self) -> None:
        while True:
            deadline = self.sched.next_deadline()
            self.step(None if deadline is None else max(0.0, deadline - self.clock()))

    def drain(self) -> None:
        """After Ctrl-C: wait for the running actions (a second Ctrl-C interrupts them)."""
        self.source.stop()
        running = self.sched.running()
        if not running:
            return
        self.out.line(
            f"waiting for {', '.join(k.describe() for k in running)} to finish (Ctrl-C again to interrupt)"
        )
        try:
            while self.sched.running():
                item = self.q.get()
                if item[0] == "done":
                    self.handle(item, self.clock())
        except KeyboardInterrupt:
            self.out.line("interrupting the running actions")
            for sig, grace in ((signal.SIGINT, 3.0), (signal.SIGKILL, 2.0)):
                self.runner.interrupt(sig)
                deadline = time.monotonic() + grace
                while self.sched.running() and time.monotonic() < deadline:
                    with contextlib.suppress(queue.Empty):
                        item = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
                        if item[0] == "done":
                            self.handle(item, self.clock())
                if not self.sched.running():
                    break
            for k in self.sched.running():
                self.out.line(f"{k.describe()}: abandoned (what it started in the box may still run)")
            raise


def _why(job: Job) -> str:
    if job.full and not job.paths:
        return " (full)"
    if not job.paths:
        return ""
    names = sorted(job.paths)
    shown = ", ".join(os.path.basename(p) or p for p in names[:3])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f" ({shown}{more} changed)"


def watch(
    file: Path | None,
    boxes: list[str] | None = None,
    *,
    quiet: float = QUIET,
    verbose: bool = False,
    out: Reporter | None = None,
) -> int:
    """Watch until Ctrl-C (or SIGTERM). Returns 0, or 130 when running actions had to be interrupted."""
    from devbox import devboxfile

    path = Path(file) if file is not None else devboxfile.find(Path.cwd())
    out = out or Reporter()
    w = Watcher(path, boxes, runner=BoxRunner(out, verbose), out=out, quiet=quiet)
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()
    if main:  # also when started with SIGINT ignored (a background job of a script)
        for s in old:
            signal.signal(s, on_stop)
    code = 0
    try:
        w.start()
        _warn_not_running(w)
        try:
            w.run()
        except KeyboardInterrupt:
            try:
                w.drain()
            except KeyboardInterrupt:
                code = 130
    finally:
        w.source.stop()
        if main:
            for s, h in old.items():
                signal.signal(s, h)
    out.line("stopped watching; the boxes keep running")
    return code


def _warn_not_running(w: Watcher) -> None:
    from devbox import orchestrator
    from devbox.runtime import container as ct

    assert w.ctx is not None
    for box in dict.fromkeys(r.box for r in w.ctx.rules):
        try:
            c = orchestrator.box_container(w.ctx.project, box)
            running = c is not None and c.refresh() == ct.RUNNING
        except errors.DevboxError:
            running = False
        if not running:
            w.out.line(f"warning: box {box} is not running: its actions fail until `devbox up {box}`")


def _helper_main(argv: list[str]) -> int:
    """`python -m devbox.watch exec CONTAINER USER CWD -- CMD...`: run CMD in the box with this
    process's stdin/stdout/stderr and exit with its code. A fresh single-threaded process, so the
    forks of exec_in are safe; started by BoxRunner through Popen."""
    if len(argv) < 5 or argv[0] != "exec" or argv[4] != "--":
        print("usage: python -m devbox.watch exec CONTAINER USER CWD -- CMD...", file=sys.stderr)
        return 2
    from devbox.runtime import container as ct

    try:
        c = ct.find(argv[1])
        st = ct.exec_in(c, argv[5:], user=argv[2] or None, cwd=argv[3] or None, stdio=(0, 1, 2))
        return ct.wait_exec(st)
    except errors.DevboxError as e:
        print(f"devbox: error: {e.message}" + (f" ({e.hint})" if e.hint else ""), file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(_helper_main(sys.argv[1:]))
