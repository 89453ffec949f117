"""Where devbox keeps things. Pure path arithmetic: nothing here creates files.

Everything lives under one state root (default /var/lib/devbox, moved with DEVBOX_ROOT):

  images/            OCI image layout: oci-layout, index.json, blobs/sha256/<hex>
  layers/<hex>/      unpacked layers, named by DiffID, used read-only as overlay lowerdirs
  containers/<id>/   state.json, spec.json, upper/, work/, rootfs/, run/, log
  networks/          one JSON file per network, leases
  projects/          one folder per Devboxfile project
  locks/             flock files
  tmp/               scratch space on the same filesystem (renames into place are atomic)

Paths are plain strings here and in every module `devbox run` imports: pathlib's import (with the
re, enum, fnmatch and urllib.parse it pulls in) costs ~12 ms, a sixth of a whole `devbox run`
(docs/architecture.md, "Performance decisions"). Callers elsewhere wrap them in Path() as they like.
"""

from __future__ import annotations

import os

ENV_ROOT = "DEVBOX_ROOT"
ENV_DEBUG = "DEVBOX_DEBUG"
DEFAULT_ROOT = "/var/lib/devbox"

TYPE_CHECKING = False
if TYPE_CHECKING:
    StrPath = str | os.PathLike[str]


def state_root() -> str:
    return os.environ.get(ENV_ROOT) or DEFAULT_ROOT


def images_dir(root: StrPath | None = None) -> str:
    return os.path.join(root or state_root(), "images")


def layers_dir(root: StrPath | None = None) -> str:
    return os.path.join(root or state_root(), "layers")


def containers_dir(root: StrPath | None = None) -> str:
    return os.path.join(root or state_root(), "containers")


def networks_dir(root: StrPath | None = None) -> str:
    return os.path.join(root or state_root(), "networks")


def projects_dir(root: StrPath | None = None) -> str:
    return os.path.join(root or state_root(), "projects")


def locks_dir(root: StrPath | None = None) -> str:
    return os.path.join(root or state_root(), "locks")


def tmp_dir(root: StrPath | None = None) -> str:
    return os.path.join(root or state_root(), "tmp")


def cache_dir(root: StrPath | None = None) -> str:
    return os.path.join(root or state_root(), "cache")
