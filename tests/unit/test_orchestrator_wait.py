"""orchestrator._wait_boxes: the boxes an `up` started are waited for at once (supervisord only
notices `startsecs` when something wakes its loop), and reported in order."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from devbox import orchestrator
from devbox.errors import ServiceError
from devbox.services.health import HealthReport, ServiceHealth


def _project(*names: str) -> Any:
    return SimpleNamespace(boxes={n: SimpleNamespace(name=n) for n in names})


def _ok(box: str) -> HealthReport:
    return HealthReport(box, {"s": ServiceHealth("s", "RUNNING", 1, 1, True, "RUNNING")})


def test_every_box_is_waited_for_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """No box's wait ends before every box's wait has begun."""
    names = ("a", "b", "c")
    barrier = threading.Barrier(len(names), timeout=10)

    def health(box: Any, c: Any) -> HealthReport:
        barrier.wait()  # a BrokenBarrierError (after 10 s) if the waits ran one after another
        return _ok(box.name)

    monkeypatch.setattr(orchestrator, "_box_health", health)
    result = orchestrator.UpResult(_project(*names))
    orchestrator._wait_boxes(_project(*names), {n: (SimpleNamespace(id=n), "started") for n in names}, result)
    assert [b.box for b in result.boxes] == ["a", "b", "c"]
    assert all(b.report.ok and b.action == "started" for b in result.boxes)


def test_the_first_failure_in_box_order_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    done = threading.Event()

    def health(box: Any, c: Any) -> HealthReport:
        if box.name == "b":
            return HealthReport("b", {"s": ServiceHealth("s", "FATAL", 0, 0, False, "FATAL: exited too quickly")})
        if box.name == "c":
            assert done.wait(10)
            raise OSError("c's supervisord socket vanished")
        return _ok(box.name)

    monkeypatch.setattr(orchestrator, "_box_health", health)
    names = ("a", "b", "c")
    result = orchestrator.UpResult(_project(*names))
    try:
        with pytest.raises(ServiceError, match="box b: service s: FATAL"):
            orchestrator._wait_boxes(_project(*names), {n: (SimpleNamespace(id=n), "started") for n in names},
                                     result)  # fmt: skip
    finally:
        done.set()
    assert [b.box for b in result.boxes] == ["a", "b"]  # both reported, c's error not reached


def test_one_box_is_waited_for_in_this_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[threading.Thread] = []
    monkeypatch.setattr(orchestrator, "_box_health", lambda box, c: seen.append(threading.current_thread()) or _ok(box.name))
    result = orchestrator.UpResult(_project("a"))
    orchestrator._wait_boxes(_project("a"), {"a": (SimpleNamespace(id="a"), "none")}, result)
    assert seen == [threading.main_thread()] and [b.box for b in result.boxes] == ["a"]
