"""Images: the store (store.py), safe layer extraction (unpack.py), references (reference.py),
archive import/export (importer.py) and the Debian bootstrap (bootstrap.py).

`ensure_image` is what the rest of devbox calls to get a base image: local store first, then the
sources that can produce it.
"""

from __future__ import annotations

from devbox.errors import ImageNotFound
from devbox.log import log
from devbox.runtime.image.store import Image, ImageStore

__all__ = ["Image", "ImageStore", "ensure_image"]


def ensure_image(store: ImageStore, ref: str) -> Image:
    """Resolve `ref` in the local store; if missing, make it: `debian:SUITE` is bootstrapped with
    mmdebstrap; other references raise ImageNotFound naming the ways to get them."""
    try:
        return store.resolve(ref)
    except ImageNotFound:
        pass
    from devbox.runtime.image import bootstrap, reference

    parsed = reference.parse(ref)
    if parsed.registry == reference.DOCKER_HUB and parsed.repository == "library/debian" and parsed.tag \
            and not parsed.digest and bootstrap.is_bootstrappable(parsed.tag):  # fmt: skip
        log.info("image %s not found locally; bootstrapping it with mmdebstrap", reference.normalize(ref))
        return bootstrap.bootstrap_debian(store, parsed.tag, ref=reference.normalize(ref))

    # not local and not a Debian bootstrap: pull it (an unreachable registry raises ImageNotFound)
    from devbox.runtime.image.pull import ensure_pulled

    return ensure_pulled(store, ref)
