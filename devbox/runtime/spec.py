"""ContainerSpec: everything needed to (re)start a container, JSON-serialisable (spec.json)."""

from __future__ import annotations

from devbox.record import asdict, field, record

TYPE_CHECKING = False  # typing costs ~4 ms to import; only type checkers need it here
if TYPE_CHECKING:
    from typing import Any


@record(frozen=True)
class MountSpec:
    source: str  # absolute host path (bind) or "" for tmpfs
    target: str  # absolute path inside the container
    readonly: bool = False
    kind: str = "bind"  # bind | tmpfs

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MountSpec:
        return cls(**d)


@record(frozen=True)
class ContainerSpec:
    id: str
    name: str
    image: str  # reference the user gave
    image_digest: str
    diff_ids: list[str]  # lowest first
    args: list[str]  # argv, entrypoint + cmd already combined
    env: list[str]  # KEY=VALUE, image env first, then the user's
    cwd: str = "/"
    user: str | None = None
    hostname: str = ""
    tty: bool = False
    interactive: bool = False
    mounts: list[MountSpec] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)
    network: str = "default"  # none | host | NAME
    ports: list[str] = field(default_factory=list)  # -p specs as given
    aliases: list[str] = field(default_factory=list)
    caps_add: list[str] = field(default_factory=list)
    caps_drop: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    auto_remove: bool = False
    stop_signal: str = "SIGTERM"
    stop_timeout: float = 10.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ContainerSpec:
        d = dict(d)
        d["mounts"] = [MountSpec.from_dict(m) for m in d.get("mounts", [])]
        known = set(cls.__record_fields__)  # type: ignore[attr-defined]
        return cls(**{k: v for k, v in d.items() if k in known})
