"""`Devboxfile.lock`: the exact base image of every box, so every machine gets the same environment.

The lockfile is JSON (stdlib only, stable key order, one value per line: readable diffs in review),
written next to the Devboxfile by `devbox lock` and committed with it. Per box it pins:

  base, packages     what the Devboxfile asked for (a change makes the box's entry stale)
  digest             the manifest digest of the box's base image in the local store; `up` uses exactly
                     this image (not whatever the tag points to today)
  registry_digest    registry bases: the digest the registry served (`devbox pull NAME@DIGEST` gets
                     exactly that image on another machine; `up` does it when the image is missing)
  debian             Debian bootstrap bases: the mirror, the suite, the `Date:` of the suite's Release
                     file at lock time, and the exact version of every installed package (from the
                     image's /var/lib/dpkg/status). A machine without the pinned image bootstraps
                     it again and checks the installed versions against these.

`devbox up` follows the lock when it exists; `devbox up --frozen` fails when the Devboxfile would
resolve differently (a box added or removed, a base or its packages changed, the pinned image missing
and not obtainable identically).
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devbox import errors, fsutil, model

LOCK_VERSION = 1
SUFFIX = ".lock"

Say = Callable[[str], None]


class LockError(errors.ConfigError):
    """The lockfile is unreadable, or the Devboxfile disagrees with it under --frozen."""


@dataclass(frozen=True)
class DebianPin:
    suite: str
    mirror: str
    release_date: str | None  # `Date:` of dists/SUITE/Release when the lock was written (None: unreachable)
    bootstrapped: str | None  # the image's `created` (when mmdebstrap ran)
    packages: dict[str, str] = field(default_factory=dict)  # name -> version, every installed package


@dataclass(frozen=True)
class BoxLock:
    base: str
    packages: tuple[str, ...]
    digest: str  # manifest digest of the base image in the local store
    ref: str | None = None  # the local tag it was resolved by
    registry_digest: str | None = None
    repository: str | None = None  # registry/repository for registry_digest
    debian: DebianPin | None = None


@dataclass(frozen=True)
class Lock:
    project: str
    boxes: dict[str, BoxLock]


# --- pure parts ---------------------------------------------------------------------------------------


def lock_path(devboxfile: Path) -> Path:
    """`Devboxfile` -> `Devboxfile.lock` (same folder; any Devboxfile name gets `.lock` appended)."""
    devboxfile = Path(devboxfile)
    return devboxfile.with_name(devboxfile.name + SUFFIX)


def debian_base_ref(suite: str, packages: tuple[str, ...] | list[str]) -> str:
    """The local tag of a Debian bootstrap base with extra packages (as orchestrator.box_image names it)."""
    pk = sorted(set(packages))
    if not pk:
        return f"debian:{suite}"
    return f"debian:{suite}-{hashlib.sha256(' '.join(pk).encode()).hexdigest()[:12]}"


def to_dict(lock: Lock) -> dict[str, Any]:
    boxes: dict[str, Any] = {}
    for name, b in lock.boxes.items():
        d = asdict(b)
        d["packages"] = list(b.packages)
        boxes[name] = {k: v for k, v in d.items() if v is not None}
    return {
        "lockVersion": LOCK_VERSION,
        "generatedBy": "devbox lock",
        "project": lock.project,
        "boxes": boxes,
    }


def dumps(lock: Lock) -> str:
    return json.dumps(to_dict(lock), indent=2, sort_keys=True) + "\n"


def _need(d: Any, key: str, kind: type | tuple[type, ...], where: str, optional: bool = False) -> Any:
    if not isinstance(d, dict):
        raise LockError(f"{where}: must be an object")
    if key not in d or d[key] is None:
        if optional:
            return None
        raise LockError(f"{where} -> {key}: missing")
    v = d[key]
    if not isinstance(v, kind):
        raise LockError(f"{where} -> {key}: must be {getattr(kind, '__name__', 'of another type')}")
    return v


def loads(text: str, where: str = "Devboxfile.lock") -> Lock:
    """Parse and validate a lockfile; errors name the path to the bad field."""
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise LockError(
            f"{where}: not valid JSON: {e}", hint="restore it from version control, or run `devbox lock`"
        ) from None
    if not isinstance(raw, dict):
        raise LockError(f"{where}: must be a JSON object", hint="run `devbox lock` to write it again")
    version = raw.get("lockVersion")
    if version != LOCK_VERSION:
        raise LockError(f"{where}: lockVersion {version!r} is not supported (this devbox reads {LOCK_VERSION})",
                        hint="upgrade devbox, or run `devbox lock` to rewrite it")  # fmt: skip
    project = _need(raw, "project", str, where)
    boxes_raw = _need(raw, "boxes", dict, where)
    boxes: dict[str, BoxLock] = {}
    for name, b in boxes_raw.items():
        w = f"{where}: boxes -> {name}"
        digest = _need(b, "digest", str, w)
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise LockError(
                f"{w} -> digest: not a sha256 digest", hint="run `devbox lock` to write it again"
            )
        pk = _need(b, "packages", list, w, optional=True) or []
        if not all(isinstance(p, str) for p in pk):
            raise LockError(f"{w} -> packages: must be a list of names")
        deb = None
        d = _need(b, "debian", dict, w, optional=True)
        if d is not None:
            pkgs = _need(d, "packages", dict, w + " -> debian", optional=True) or {}
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in pkgs.items()):
                raise LockError(f"{w} -> debian -> packages: must map names to versions")
            deb = DebianPin(suite=_need(d, "suite", str, w + " -> debian"), mirror=_need(d, "mirror", str, w + " -> debian"),
                            release_date=_need(d, "release_date", str, w + " -> debian", optional=True),
                            bootstrapped=_need(d, "bootstrapped", str, w + " -> debian", optional=True),
                            packages=dict(pkgs))  # fmt: skip
        boxes[name] = BoxLock(base=_need(b, "base", str, w), packages=tuple(pk), digest=digest,
                              ref=_need(b, "ref", str, w, optional=True),
                              registry_digest=_need(b, "registry_digest", str, w, optional=True),
                              repository=_need(b, "repository", str, w, optional=True), debian=deb)  # fmt: skip
    return Lock(project, boxes)


def box_changes(entry: BoxLock | None, box: model.Box) -> str | None:
    """Why the lock entry does not describe `box` any more, or None when it does."""
    if entry is None:
        return "the box is not in the lock (added since)"
    if entry.base != box.base:
        return f"its base changed ({entry.base} in the lock, {box.base} in the Devboxfile)"
    if sorted(set(entry.packages)) != sorted(set(box.packages)):
        added = sorted(set(box.packages) - set(entry.packages))
        removed = sorted(set(entry.packages) - set(box.packages))
        parts = ([f"added {', '.join(added)}"] if added else []) + (
            [f"removed {', '.join(removed)}"] if removed else []
        )
        return "its packages changed (" + "; ".join(parts) + ")"
    return None


def project_changes(lock: Lock, project: model.Project) -> list[str]:
    """Every way the Devboxfile differs from the lock, one line each (empty: the lock holds)."""
    out = []
    for name in project.boxes:
        why = box_changes(lock.boxes.get(name), project.boxes[name])
        if why:
            out.append(f"box {name}: {why}")
    for name in lock.boxes:
        if name not in project.boxes:
            out.append(f"box {name}: in the lock but no longer in the Devboxfile (removed since)")
    return out


def parse_dpkg_status(text: str) -> dict[str, str]:
    """Installed packages of a dpkg status file: {name (with :arch for foreign ones): version}."""
    out: dict[str, str] = {}
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1].isspace() or ":" not in line:
                continue
            k, _, v = line.partition(":")
            fields[k.strip().lower()] = v.strip()
        name, version = fields.get("package"), fields.get("version")
        if not name or not version or fields.get("status", "").split()[-1:] != ["installed"]:
            continue
        arch = fields.get("architecture")
        key = f"{name}:{arch}" if name in out and arch else name  # multi-arch: the second one gets :arch
        out[key] = version
    return out


def package_changes(locked: dict[str, str], actual: dict[str, str], limit: int = 8) -> list[str]:
    """Differences between pinned and installed package versions, most telling first."""
    out = []
    for name in sorted(set(locked) | set(actual)):
        a, b = locked.get(name), actual.get(name)
        if a == b:
            continue
        if a is None:
            out.append(f"{name} {b} is installed but not in the lock")
        elif b is None:
            out.append(f"{name} {a} is in the lock but not installed")
        else:
            out.append(f"{name} {a} in the lock, {b} installed")
    if len(out) > limit:
        out = out[:limit] + [f"... and {len(out) - limit} more"]
    return out


def parse_release_date(text: str) -> str | None:
    m = re.search(r"^Date:\s*(.+?)\s*$", text, re.MULTILINE)
    return m.group(1) if m else None


# --- reading and writing ------------------------------------------------------------------------------


def read(project: model.Project) -> Lock | None:
    p = lock_path(project.file)
    try:
        text = p.read_text()
    except FileNotFoundError:
        return None
    return loads(text, p.name)


def write(project: model.Project, lock: Lock) -> Path:
    p = lock_path(project.file)
    fsutil.atomic_write(p, dumps(lock))
    return p


# --- resolving (touches the store, the mirror, the registry) -----------------------------------------


def _debian_suite(base: str) -> str | None:
    from devbox.orchestrator import _debian_suite

    return _debian_suite(base)


def installed_packages(store: Any, img: Any) -> dict[str, str]:
    """Package versions from the image's /var/lib/dpkg/status (the highest layer that has it)."""
    for d in reversed(store.ensure_layers(img)):
        p = Path(d, "var/lib/dpkg/status")
        if p.is_symlink():
            break
        if p.is_file():
            return parse_dpkg_status(p.read_text(errors="replace"))
    return {}


def release_date(mirror: str, suite: str, timeout: float = 10.0) -> str | None:
    try:
        with urllib.request.urlopen(f"{mirror.rstrip('/')}/dists/{suite}/Release", timeout=timeout) as r:
            return parse_release_date(r.read(1 << 20).decode(errors="replace"))
    except (OSError, ValueError):
        return None


def _registry_digest(store: Any, img: Any, base: str) -> tuple[str | None, str | None]:
    ann: dict[str, str] = {}
    for e in store._read_index():
        if e.get("digest") == img.digest:
            ann.update(e.get("annotations") or {})
    try:
        from devbox.runtime.image import pull  # the registry client (optional)
    except ImportError:
        return None, None
    reg = ann.get(getattr(pull, "REGISTRY_DIGEST_ANNOTATION", "dev.devbox.registry.digest"))
    repo = ann.get(getattr(pull, "REGISTRY_REPO_ANNOTATION", "dev.devbox.registry.repository"))
    if reg is None and hasattr(pull, "pulled_digest"):
        try:
            reg = pull.pulled_digest(base)
        except Exception:  # noqa: BLE001 - bookkeeping only
            reg = None
    if reg and repo is None:
        from devbox.runtime.image import reference

        r = reference.parse(base)
        repo = f"{r.registry}/{r.repository}"
    return reg, repo


def resolve_box(store: Any, project: model.Project, box: model.Box, say: Say) -> BoxLock:
    """Resolve the box's base as `up` would without a lock (bootstrapping or pulling what is missing)."""
    suite = _debian_suite(box.base)
    if suite is not None:
        ref = debian_base_ref(suite, box.packages)
        try:
            img = store.resolve(ref)
        except errors.ImageNotFound:
            from devbox.runtime.image import bootstrap

            say(f"box {box.name}: bootstrapping {ref}")
            img = bootstrap.bootstrap_debian(
                store, suite, ref=ref, packages=tuple(sorted(set(box.packages)))
            )
        from devbox.runtime.image import bootstrap

        mirror, _ = bootstrap.find_mirror()
        pin = DebianPin(suite=suite, mirror=mirror, release_date=release_date(mirror, suite),
                        bootstrapped=img.created, packages=installed_packages(store, img))  # fmt: skip
        return BoxLock(box.base, tuple(sorted(set(box.packages))), img.digest, img.ref, debian=pin)
    from devbox.runtime.image import ensure_image

    img = ensure_image(store, box.base)
    reg, repo = _registry_digest(store, img, box.base)
    return BoxLock(box.base, tuple(sorted(set(box.packages))), img.digest, img.ref, reg, repo)


def lock_project(project: model.Project, say: Say) -> tuple[Lock, Path]:
    from devbox.runtime.image.store import ImageStore

    store = ImageStore()
    boxes = {name: resolve_box(store, project, project.boxes[name], say) for name in project.boxes}
    lock = Lock(project.name, boxes)
    return lock, write(project, lock)


# --- the hooks `up` uses ------------------------------------------------------------------------------


def check_frozen(project: model.Project) -> Lock:
    """For `up --frozen`: the lock must exist and describe every box of the Devboxfile."""
    lock = read(project)
    p = lock_path(project.file)
    if lock is None:
        raise LockError(f"--frozen: {p.name} does not exist next to {project.file.name}",
                        hint="run `devbox lock` and commit the file")  # fmt: skip
    changes = project_changes(lock, project)
    if changes:
        more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
        raise LockError(f"--frozen: the Devboxfile does not match {p.name}: {changes[0]}{more}",
                        hint="run `devbox lock` to update the lock, or undo the change")  # fmt: skip
    return lock


def pinned_base(store: Any, project: model.Project, box: model.Box, *, frozen: bool = False,
                only_cached: bool = False, say: Say = print) -> Any | None:  # fmt: skip
    """The image the lock pins as the box's base, or None when `up` should resolve the base itself
    (no lock, a stale entry, or a pinned image that is gone: then `check_base` checks what it got)."""
    lock = read(project)
    if lock is None:
        return None
    entry = lock.boxes.get(box.name)
    why = box_changes(entry, box)
    if why or entry is None:
        if frozen:
            raise LockError(f"--frozen: box {box.name}: {why}", hint="run `devbox lock` to update the lock")
        if not only_cached:
            say(f"box {box.name}: {lock_path(project.file).name} is out of date ({why}); "
                "run `devbox lock` to pin the new base")  # fmt: skip
        return None
    try:
        return store.resolve(entry.digest)
    except errors.ImageNotFound:
        pass
    if only_cached:
        return None
    if entry.registry_digest and entry.repository:
        name = f"{entry.repository}@{entry.registry_digest}"
        try:
            from devbox.runtime.image import pull
        except ImportError:
            pull = None  # type: ignore[assignment]
        if pull is not None:
            say(f"box {box.name}: pulling the pinned base {name}")
            try:
                return pull.pull(store, name)
            except errors.DevboxError as e:
                if frozen:
                    raise LockError(f"--frozen: box {box.name}: the pinned base {name} is not in the store and "
                                    f"cannot be pulled: {e.message}", hint=e.hint) from None  # fmt: skip
                say(
                    f"box {box.name}: cannot pull the pinned base {name} ({e.message}); resolving {box.base}"
                )
                return None
    if frozen and entry.debian is None:
        raise LockError(f"--frozen: box {box.name}: the pinned base image {entry.digest[:19]} ({entry.ref or entry.base}) "
                        "is not in the local store",
                        hint="get it with `devbox pull`/`devbox image load`, or run `devbox up` without --frozen "
                             "and `devbox lock`")  # fmt: skip
    return None


def check_base(store: Any, project: model.Project, box: model.Box, img: Any, *, frozen: bool = False,
               say: Say = print) -> None:  # fmt: skip
    """After `up` resolved the base itself although the lock has an entry: is it what the lock pins?"""
    lock = read(project)
    entry = lock.boxes.get(box.name) if lock else None
    if entry is None or box_changes(entry, box) or img.digest == entry.digest:
        return
    name = lock_path(project.file).name
    if entry.debian is not None:
        diffs = package_changes(entry.debian.packages, installed_packages(store, img))
        if not diffs:
            say(f"box {box.name}: base rebuilt from the mirror; every package version matches {name}")
            return
        msg = f"box {box.name}: the rebuilt Debian base differs from {name}: {'; '.join(diffs)}"
        hint = ("the mirror has moved on since the lock was written; share the exact image "
                "(`devbox push`/`devbox image save`) or run `devbox lock` to accept the new versions")  # fmt: skip
    else:
        msg = f"box {box.name}: {box.base} resolves to {img.digest[:19]}, {name} pins {entry.digest[:19]}"
        hint = "get the pinned image, or run `devbox lock` to accept this one"
    if frozen:
        raise LockError("--frozen: " + msg, hint=hint)
    say(msg + f" ({hint})")
