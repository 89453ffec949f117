"""Image references with Docker Hub conventions.

`parse("nginx")` -> Reference("docker.io", "library/nginx", "latest", None);
`parse("localhost:5000/a/b:1@sha256:...")` keeps the registry, tag and digest.
`normalize` gives the short form devbox stores tags under: `nginx:latest`, `quay.io/x/y:1`.
"""

from __future__ import annotations

import re

from devbox.errors import ConfigError
from devbox.record import record

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}$")
_REGISTRY = re.compile(r"^[A-Za-z0-9.-]+(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$")


@record(frozen=True)
class Reference:
    registry: str  # "docker.io", "localhost:5000", "quay.io"
    repository: str  # "library/debian", "org/app"
    tag: str | None  # "latest" when neither tag nor digest was given
    digest: str | None  # "sha256:..."

    @property
    def name(self) -> str:
        """Short repository name: `debian`, `org/app`, `quay.io/org/app`."""
        if self.registry == DOCKER_HUB:
            repo = self.repository
            return repo[len("library/") :] if repo.startswith("library/") else repo
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def _bad(ref: str, why: str) -> ConfigError:
    return ConfigError(f"invalid image reference {ref!r}: {why}",
                       hint="use NAME[:TAG] or NAME@sha256:DIGEST, e.g. debian:bookworm")  # fmt: skip


def parse(ref: str) -> Reference:
    """Split `ref` into registry, repository, tag and digest (Docker Hub conventions)."""
    orig = ref
    if not ref or ref != ref.strip():
        raise _bad(orig, "empty or surrounded by spaces")
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
        if not _DIGEST.match(digest):
            raise _bad(orig, f"bad digest {digest!r}")
    tag = None
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        ref, tag = ref[:colon], ref[colon + 1 :]
        if not _TAG.match(tag):
            raise _bad(orig, f"bad tag {tag!r}")
    if not ref:
        raise _bad(orig, "no repository name")
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, repository = first, rest
        if not _REGISTRY.match(registry):
            raise _bad(orig, f"bad registry {registry!r}")
        if registry in _HUB_ALIASES:
            registry = DOCKER_HUB
    else:
        registry, repository = DOCKER_HUB, ref
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    for comp in repository.split("/"):
        if not _COMPONENT.match(comp):
            raise _bad(orig, f"bad repository component {comp!r} (lowercase letters, digits, . _ -)")
    if len(repository) > 255:
        raise _bad(orig, "repository name too long")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, repository, tag, digest)


def normalize(ref: str) -> str:
    """The short, canonical form: `docker.io/library/debian` -> `debian:latest`."""
    return str(parse(ref))


def is_digest(s: str) -> bool:
    return bool(re.match(r"^sha256:[0-9a-f]{64}$", s))
