"""devbox.record: the small dataclass replacement used on `devbox run`'s path."""

from __future__ import annotations

import subprocess
import sys
from typing import ClassVar

import pytest

from devbox.record import FrozenInstanceError, asdict, field, record, replace


@record(frozen=True)
class Point:
    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list)
    secret: str = field(default="s", repr=False)
    KIND: ClassVar[str] = "point"


@record
class Box:
    name: str
    points: list[Point] = field(default_factory=list)
    meta: dict[str, Point] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.name}: {len(self.points)}"


@record(frozen=True)
class Point3(Point):
    z: int = 0


def test_init_defaults_and_factories() -> None:
    a, b = Point(1), Point(1)
    assert (a.x, a.y, a.tags, a.secret) == (1, 0, [], "s")
    assert a.tags is not b.tags  # a new list per instance
    assert Point(1, 2, ["t"]).tags == ["t"]
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1, nosuch=2)  # type: ignore[call-arg]
    assert Point.KIND == "point" and "KIND" not in Point.__record_fields__  # type: ignore[attr-defined]


def test_repr_eq_hash() -> None:
    assert repr(Point(1, 2)) == "Point(x=1, y=2, tags=[])"  # repr=False hides `secret`
    assert Point(1, 2) == Point(1, 2) and Point(1, 2) != Point(2, 1)
    assert Point(1) != (1, 0, [], "s")
    assert Point(1) != Point3(1)  # another class is never equal
    assert hash(Point(1, 2, ("t",), "a")) == hash(Point(1, 2, ("t",), "a"))  # type: ignore[arg-type]
    assert Box("a") == Box("a")
    with pytest.raises(TypeError):
        hash(Box("a"))  # mutable records are unhashable, as with dataclasses


def test_frozen_and_mutable() -> None:
    p = Point(1)
    with pytest.raises(FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del p.x  # type: ignore[misc]
    b = Box("a")
    b.name = "b"
    assert b.describe() == "b: 0"


def test_inheritance_asdict_replace() -> None:
    p3 = Point3(1, 2, z=3)
    assert (p3.x, p3.y, p3.z) == (1, 2, 3)
    b = Box("a", [Point(1)], {"k": Point(2, tags=["x"])})
    assert asdict(b) == {"name": "a", "points": [{"x": 1, "y": 0, "tags": [], "secret": "s"}],
                         "meta": {"k": {"x": 2, "y": 0, "tags": ["x"], "secret": "s"}}}  # fmt: skip
    q = replace(Point(1, 2), y=5)
    assert q == Point(1, 5)
    with pytest.raises(TypeError):
        replace(Point(1), w=1)


def test_ordering_rule_and_bad_field() -> None:
    with pytest.raises(TypeError, match="follows a default"):

        @record
        class Bad:
            a: int = 1
            b: int  # type: ignore[misc]

    with pytest.raises(ValueError):
        field(default=1, default_factory=list)


def test_run_path_imports_no_dataclasses_or_inspect() -> None:
    """The modules `devbox run` imports stay clear of dataclasses/inspect (their cost is why record exists)."""
    code = ("import sys; import devbox.cli.runner, devbox.runtime.container, devbox.runtime.network, "
            "devbox.runtime.image.store, devbox.runtime.cgroups; "
            "print(sorted(m for m in ('dataclasses', 'inspect') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
