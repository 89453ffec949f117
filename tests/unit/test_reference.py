from __future__ import annotations

import pytest

from devbox.errors import ConfigError
from devbox.runtime.image.reference import Reference, normalize, parse

D = "sha256:" + "a" * 64


@pytest.mark.parametrize("ref,expected", [
    ("debian", Reference("docker.io", "library/debian", "latest", None)),
    ("debian:bookworm", Reference("docker.io", "library/debian", "bookworm", None)),
    ("library/debian:12", Reference("docker.io", "library/debian", "12", None)),
    ("docker.io/library/debian", Reference("docker.io", "library/debian", "latest", None)),
    ("index.docker.io/library/debian:trixie", Reference("docker.io", "library/debian", "trixie", None)),
    ("org/app:1.0", Reference("docker.io", "org/app", "1.0", None)),
    ("localhost:5000/x", Reference("localhost:5000", "x", "latest", None)),
    ("localhost/x:y", Reference("localhost", "x", "y", None)),
    ("quay.io/org/sub/app:v1", Reference("quay.io", "org/sub/app", "v1", None)),
    (f"debian@{D}", Reference("docker.io", "library/debian", None, D)),
    (f"reg.example:443/a/b:t@{D}", Reference("reg.example:443", "a/b", "t", D)),
])  # fmt: skip
def test_parse(ref: str, expected: Reference) -> None:
    assert parse(ref) == expected


@pytest.mark.parametrize("ref,expected", [
    ("debian", "debian:latest"),
    ("docker.io/library/debian:bookworm", "debian:bookworm"),
    ("library/busybox", "busybox:latest"),
    ("docker.io/org/app", "org/app:latest"),
    ("localhost:5000/x", "localhost:5000/x:latest"),
    ("quay.io/a/b:1", "quay.io/a/b:1"),
    (f"debian@{D}", f"debian@{D}"),
])  # fmt: skip
def test_normalize(ref: str, expected: str) -> None:
    assert normalize(ref) == expected
    assert normalize(expected) == expected


@pytest.mark.parametrize("bad", ["", "Debian", "debian:", "debian:bad tag", "a//b", "debian@sha256:xyz", " x", "-x"])
def test_invalid(bad: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse(bad)
    assert ei.value.hint
