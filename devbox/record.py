"""Small records: what dataclasses does for the classes on `devbox run`'s path, at a fraction of the cost.

`from dataclasses import dataclass` imports inspect (with ast, dis, tokenize: ~8 ms) and then exec()s
several generated functions per class (~1 ms each). A container start defines a dozen such classes,
so dataclasses alone cost ~20 ms of a ~100 ms `devbox run`. `@record` generates the same __init__,
__repr__ and __eq__ (and __hash__ plus the read-only guard with frozen=True) as plain closures over
the class's field table: nothing is compiled or imported.

Supported: annotated fields in order, defaults, `field(default_factory=..., repr=False)`, inheritance
from another record, frozen=True, `asdict`. Not supported (use dataclasses where they are needed):
ordering, slots, kw_only, __post_init__, InitVar. Annotations are read as written (these modules
use `from __future__ import annotations`); a field annotated `ClassVar[...]` is not a field.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")

_MISSING: Any = object()


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen record."""


class Field:
    __slots__ = ("default", "default_factory", "repr")

    def __init__(self, default: Any, default_factory: Any, repr: bool) -> None:  # noqa: A002
        self.default = default
        self.default_factory = default_factory
        self.repr = repr


def field(*, default: Any = _MISSING, default_factory: Any = _MISSING, repr: bool = True) -> Any:  # noqa: A002
    """Like dataclasses.field, for the three options records support."""
    if default is not _MISSING and default_factory is not _MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, default_factory, repr)


def _fields_of(cls: type) -> dict[str, Field]:
    fields: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        fields.update(getattr(base, "__record_fields__", {}))
    for name, ann in cls.__dict__.get("__annotations__", {}).items():
        if str(ann).replace("typing.", "").startswith("ClassVar"):
            continue
        value = cls.__dict__.get(name, _MISSING)
        f = value if isinstance(value, Field) else Field(value, _MISSING, True)
        fields[name] = f
        if isinstance(value, Field):  # the class attribute becomes the plain default (or goes)
            if f.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
    return fields


def _build(cls: type, frozen: bool) -> type:
    fields = _fields_of(cls)
    names = tuple(fields)
    seen_default = False
    for name, f in fields.items():
        if f.default is not _MISSING or f.default_factory is not _MISSING:
            seen_default = True
        elif seen_default:
            raise TypeError(f"non-default field {name!r} follows a default field in {cls.__name__}")
    shown = tuple(n for n, f in fields.items() if f.repr)
    qual = cls.__qualname__
    setter = object.__setattr__

    # Generic methods, closed over the field table: no exec, no compile. A record is built a few
    # times per command, so the few microseconds these add per instance do not matter.
    def __init__(self: Any, *args: Any, **kw: Any) -> None:
        if len(args) > len(names):
            raise TypeError(f"{qual}() takes {len(names)} positional arguments but {len(args)} were given")
        for name, value in zip(names, args, strict=False):
            if name in kw:
                raise TypeError(f"{qual}() got multiple values for argument {name!r}")
            kw[name] = value
        for name, f in fields.items():
            if name in kw:
                setter(self, name, kw.pop(name))
            elif f.default is not _MISSING:
                setter(self, name, f.default)
            elif f.default_factory is not _MISSING:
                setter(self, name, f.default_factory())
            else:
                raise TypeError(f"{qual}() missing required argument {name!r}")
        if kw:
            raise TypeError(f"{qual}() got an unexpected keyword argument {next(iter(kw))!r}")

    def __repr__(self: Any) -> str:
        return f"{type(self).__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in shown)})"

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in names)

    def __hash__(self: Any) -> int:
        return hash(tuple(getattr(self, n) for n in names))

    def __setattr__(self: Any, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self: Any, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    methods: dict[str, Any] = {"__init__": __init__, "__repr__": __repr__, "__eq__": __eq__}
    if frozen:
        methods.update(__hash__=__hash__, __setattr__=__setattr__, __delattr__=__delattr__)
    for k, fn in methods.items():
        if k in cls.__dict__ and k != "__init__":  # the class's own method wins, as with dataclasses
            continue
        fn.__qualname__ = f"{qual}.{k}"
        setattr(cls, k, fn)
    if not frozen and "__hash__" not in cls.__dict__:
        cls.__hash__ = None  # type: ignore[assignment]  # mutable and compared by value, as dataclasses
    cls.__record_fields__ = fields  # type: ignore[attr-defined]
    cls.__match_args__ = names  # type: ignore[attr-defined]
    return cls


def record(cls: type[T] | None = None, *, frozen: bool = False) -> Any:
    """Class decorator: `@record` or `@record(frozen=True)`."""

    def wrap(c: type[T]) -> type[T]:
        return _build(c, frozen)  # type: ignore[return-value]

    return wrap if cls is None else wrap(cls)


def is_record(obj: object) -> bool:
    return hasattr(type(obj), "__record_fields__")


def asdict(obj: Any, *, factory: Callable[..., Any] = dict) -> Any:
    """Fields of a record as a dict, records inside lists, tuples and dicts converted too."""
    if hasattr(type(obj), "__record_fields__"):
        return factory((n, asdict(getattr(obj, n), factory=factory)) for n in type(obj).__record_fields__)
    if isinstance(obj, list | tuple):
        return type(obj)(asdict(v, factory=factory) for v in obj)
    if isinstance(obj, dict):
        return {k: asdict(v, factory=factory) for k, v in obj.items()}
    return obj


def replace(obj: T, **changes: Any) -> T:
    """A copy of the record `obj` with some fields changed (dataclasses.replace)."""
    fields = type(obj).__record_fields__  # type: ignore[attr-defined]
    unknown = set(changes) - set(fields)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field(s) {', '.join(sorted(unknown))}")
    return type(obj)(**{n: changes[n] if n in changes else getattr(obj, n) for n in fields})
