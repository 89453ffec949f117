"""Where devbox keeps things. Pure path arithmetic: nothing here creates files.

Everything lives under one state root (default /var/lib/devbox, moved with DEVBOX_ROOT):

  images/            OCI image layout: oci-layout, index.json, blobs/sha256/<hex>
  layers/<hex>/      unpacked layers, named by DiffID, used read-only as overlay lowerdirs
  containers/<id>/   state.json, spec.json, upper/, work/, rootfs/, run/, log
  networks/          one JSON file per network, leases
  projects/          one folder per Devboxfile project
  locks/             flock files
  tmp/               scratch space on the same filesystem (renames into place are atomic)
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_ROOT = "DEVBOX_ROOT"
ENV_DEBUG = "DEVBOX_DEBUG"
DEFAULT_ROOT = Path("/var/lib/devbox")


def state_root() -> Path:
    return Path(os.environ.get(ENV_ROOT) or DEFAULT_ROOT)


def images_dir(root: Path | None = None) -> Path:
    return (root or state_root()) / "images"


def layers_dir(root: Path | None = None) -> Path:
    return (root or state_root()) / "layers"


def containers_dir(root: Path | None = None) -> Path:
    return (root or state_root()) / "containers"


def networks_dir(root: Path | None = None) -> Path:
    return (root or state_root()) / "networks"


def projects_dir(root: Path | None = None) -> Path:
    return (root or state_root()) / "projects"


def locks_dir(root: Path | None = None) -> Path:
    return (root or state_root()) / "locks"


def tmp_dir(root: Path | None = None) -> Path:
    return (root or state_root()) / "tmp"


def cache_dir(root: Path | None = None) -> Path:
    return (root or state_root()) / "cache"
