"""Logging: progress and errors go to stderr; data to stdout is the CLI's business."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator

log = logging.getLogger("devbox")


def setup(debug: bool = False) -> None:
    debug = debug or bool(os.environ.get("DEVBOX_DEBUG"))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    log.propagate = False


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """Log a step and, under --debug, how long it took."""
    t0 = time.monotonic()
    log.debug("‣ %s", what)
    yield
    log.debug("‣ %s: %.0f ms", what, (time.monotonic() - t0) * 1000)
