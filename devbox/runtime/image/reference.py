"""Image references with Docker Hub conventions.

`parse("nginx")` -> Reference("docker.io", "library/nginx", "latest", None);
`parse("localhost:5000/a/b:1@sha256:...")` keeps the registry, tag and digest.
`normalize` gives the short form devbox stores tags under: `nginx:latest`, `quay.io/x/y:1`.
"""

from __future__ import annotations

from devbox.errors import ConfigError
from devbox.record import record
from devbox.textmatch import ALNUM, HEX, LOWER_ALNUM, LOWER_HEX, is_ascii_digits, is_name, only

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
# Matchers in plain string code (`re` costs ~9 ms to import, and `devbox run` parses a reference);
# each docstring gives the regex it stands for (whole string; tests/unit/test_textmatch.py compares them).
_TAG_FIRST = ALNUM | frozenset("_")
_COMPONENT_CHARS = LOWER_ALNUM | frozenset("._-")
_ALGORITHM_CHARS = LOWER_ALNUM | frozenset("+._-")
_HOST_CHARS = ALNUM | frozenset(".-")
_BRACKETED_HOST_CHARS = HEX | frozenset(":")
_LOWER_ALNUM_TO_SPACE = str.maketrans(dict.fromkeys(LOWER_ALNUM, " "))


def _separators(s: str) -> list[str]:
    """The runs of characters other than [a-z0-9] in `s` (which holds no whitespace)."""
    return s.translate(_LOWER_ALNUM_TO_SPACE).split()


def _is_component(s: str) -> bool:
    """`[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`"""
    return (only(s, _COMPONENT_CHARS) and s != "" and s[0] in LOWER_ALNUM and s[-1] in LOWER_ALNUM
            and all(r in (".", "_", "__") or r == "-" * len(r) for r in _separators(s)))  # fmt: skip


def _is_tag(s: str) -> bool:
    """`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`"""
    return is_name(s, 128, _TAG_FIRST)


def _is_digest(s: str) -> bool:
    """`[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}`"""
    algorithm, _, hex_ = s.partition(":")
    return (len(hex_) >= 32 and only(hex_, HEX) and only(algorithm, _ALGORITHM_CHARS) and algorithm != ""
            and algorithm[0] in LOWER_ALNUM and algorithm[-1] in LOWER_ALNUM
            and all(len(r) == 1 for r in _separators(algorithm)))  # fmt: skip


def is_registry(s: str) -> bool:
    r"""`[A-Za-z0-9.-]+(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?`: HOST[:PORT] or [IPv6][:PORT]."""
    if s.startswith("["):
        end = s.find("]")
        if end < 2 or not only(s[1:end], _BRACKETED_HOST_CHARS):
            return False
        port = s[end + 1 :]
    else:
        host, colon, port = s.partition(":")
        if not host or not only(host, _HOST_CHARS):
            return False
        port = colon + port
    return not port or (port[0] == ":" and is_ascii_digits(port[1:]))


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
        if not _is_digest(digest):
            raise _bad(orig, f"bad digest {digest!r}")
    tag = None
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        ref, tag = ref[:colon], ref[colon + 1 :]
        if not _is_tag(tag):
            raise _bad(orig, f"bad tag {tag!r}")
    if not ref:
        raise _bad(orig, "no repository name")
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, repository = first, rest
        if not is_registry(registry):
            raise _bad(orig, f"bad registry {registry!r}")
        if registry in _HUB_ALIASES:
            registry = DOCKER_HUB
    else:
        registry, repository = DOCKER_HUB, ref
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    for comp in repository.split("/"):
        if not _is_component(comp):
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
    """`sha256:[0-9a-f]{64}`"""
    return len(s) == 71 and s.startswith("sha256:") and only(s[7:], LOWER_HEX)
