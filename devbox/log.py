"""Logging: progress and errors go to stderr; data to stdout is the CLI's business.

devbox's own small logger, not the `logging` package: importing logging (with the traceback, string
and threading machinery it pulls in) costs 10-15 ms, on every command, for what is here a level check
and a write to stderr. The interface is the subset of logging.Logger devbox uses (debug, info,
warning, error, isEnabledFor), so a module can still say `log.debug("x %s", y)`. Until setup() runs
(library use, tests) only warnings and errors are printed, as logging's last-resort handler does.
"""

from __future__ import annotations

import os
import sys
import time

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40


class Logger:
    def __init__(self, name: str) -> None:
        self.name = name
        self.level = WARNING

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's name
        return level >= self.level

    def _emit(self, level: int, msg: object, args: tuple[object, ...]) -> None:
        if level < self.level:
            return
        text = str(msg) % args if args else str(msg)
        try:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):  # stderr closed or gone: logging must never fail the command
            pass

    def debug(self, msg: object, *args: object) -> None:
        self._emit(DEBUG, msg, args)

    def info(self, msg: object, *args: object) -> None:
        self._emit(INFO, msg, args)

    def warning(self, msg: object, *args: object) -> None:
        self._emit(WARNING, msg, args)

    def error(self, msg: object, *args: object) -> None:
        self._emit(ERROR, msg, args)


log = Logger("devbox")


def getLogger(name: str = "devbox") -> Logger:  # noqa: N802 - logging's name
    """Every devbox module logs through the one logger (there is one level and one stream)."""
    return log


def setup(debug: bool = False) -> None:
    debug = debug or bool(os.environ.get("DEVBOX_DEBUG"))
    log.level = DEBUG if debug else INFO


class step:  # noqa: N801 -- used like the function it was: `with log.step("x"):`
    """Log a step and, under --debug, how long it took.

    A class rather than a contextlib.contextmanager: contextlib's import (functools, collections)
    costs ~3 ms of a `devbox run` that imports nothing else needing it."""

    __slots__ = ("what", "t0")

    def __init__(self, what: str) -> None:
        self.what = what
        self.t0 = 0.0

    def __enter__(self) -> None:
        self.t0 = time.monotonic()
        log.debug("‣ %s", self.what)

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:  # as the generator did: no timing line when the block raised
            log.debug("‣ %s: %.0f ms", self.what, (time.monotonic() - self.t0) * 1000)
