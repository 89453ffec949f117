"""Vagrant-style snapshots of a box: save, restore, list, delete.

A snapshot is an image in the store, tagged `snapshot/<project>-<box>:<NAME>`: the box's lower image
(its Devboxfile image, or the snapshot it was restored from) plus one layer committed from the box's
overlay upper dir (frozen while it is read, so a running box gives one consistent point in time).
The snapshot's manifest records the box and the image digest the box was made from.

Restore does not copy anything back: the box is stopped, its container is pointed at the snapshot's
layers as overlay lowerdirs (they are unpacked in the store already, in overlay format: whiteouts
and opaque directories included), its upper dir is replaced by an empty one, and it is started and
waited on until healthy. So a restore takes the time of a stop and a start, whatever the size of the
snapshot, and the snapshot itself stays unchanged for the next restore.

What a snapshot holds: the box's filesystem outside its mounts. What it does not: bind-mounted host
folders (your source code), /run/devbox and the service logs, and memory (processes restart).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devbox import errors, fsutil, model
from devbox.record import replace
from devbox.runtime.image import reference

ANN_PROJECT = "dev.devbox.snapshot.project"
ANN_BOX = "dev.devbox.snapshot.box"
ANN_NAME = "dev.devbox.snapshot.name"
ANN_BOX_IMAGE = "dev.devbox.snapshot.box-image"  # the box's image digest when the snapshot was saved
REPO_PREFIX = "snapshot/"


@dataclass(frozen=True)
class Snapshot:
    box: str
    name: str
    ref: str
    digest: str
    created: str | None
    size: int  # bytes of the snapshot's own layer (compressed)
    comment: str | None


def repository(project: model.Project, box: str) -> str:
    return f"{REPO_PREFIX}{project.name}-{box}"


def snapshot_ref(project: model.Project, box: str, name: str) -> str:
    ref = f"{repository(project, box)}:{name}"
    try:
        reference.parse(ref)
    except errors.ConfigError:
        raise errors.ConfigError(f"invalid snapshot name {name!r}",
                                 hint="use letters, digits, '_', '.' and '-' (at most 128), e.g. before-upgrade") from None  # fmt: skip
    return reference.normalize(ref)


def _box(project: model.Project, box: str) -> model.Box:
    if box not in project.boxes:
        import difflib

        close = difflib.get_close_matches(box, list(project.boxes), 1)
        raise errors.ConfigError(f"no box named {box!r} in {project.file.name}",
                                 hint=f"did you mean {close[0]!r}?" if close else f"boxes: {', '.join(project.boxes)}")  # fmt: skip
    return project.boxes[box]


def _container(project: model.Project, box: str) -> Any:
    from devbox import orchestrator

    c = orchestrator.box_container(project, box)
    if c is None:
        raise errors.IncorrectStatus(f"box {box} has no container yet", hint="create it with `devbox up`")
    return c


def _store() -> Any:
    from devbox.runtime.image.store import ImageStore

    return ImageStore()


def list_snapshots(project: model.Project, box: str | None = None) -> list[Snapshot]:
    boxes = [box] if box else list(project.boxes)
    if box:
        _box(project, box)
    prefixes = {reference.normalize(repository(project, b) + ":x").rsplit(":", 1)[0] + ":": b for b in boxes}
    out = []
    for img in _store().list():
        if not img.ref:
            continue
        for prefix, b in prefixes.items():
            if img.ref.startswith(prefix):
                hist = (img.config.get("history") or [{}])[-1]
                out.append(Snapshot(b, img.ref[len(prefix):], img.ref, img.digest, img.created,
                                    int(img.layers[-1].get("size", 0)) if img.layers else 0,
                                    hist.get("comment")))  # fmt: skip
    out.sort(key=lambda s: (s.box, s.created or "", s.name))
    return out


def save(
    project: model.Project, box: str, name: str, *, message: str | None = None, force: bool = False
) -> Any:
    """Commit the box's current state as snapshot `name` (a running box is frozen while it is read)."""
    from devbox.runtime.image.commit import commit

    _box(project, box)
    ref = snapshot_ref(project, box, name)
    store = _store()
    if not force:
        try:
            store.resolve(ref)
        except errors.ImageNotFound:
            pass
        else:
            raise errors.AlreadyExists(f"box {box} already has a snapshot named {name!r}",
                                       hint=f"pick another name, use -f to replace it, or delete it first: `devbox snapshot delete {box} {name}`")  # fmt: skip
    c = _container(project, box)
    ann = {ANN_PROJECT: project.name, ANN_BOX: box, ANN_NAME: name, ANN_BOX_IMAGE: c.spec.image_digest}
    with c.lock():
        return commit(store, c, ref, message=message or f"snapshot {name} of box {box}",
                      created_by=f"devbox snapshot save {box} {name}", annotations=ann)  # fmt: skip


def _resolve_snapshot(project: model.Project, box: str, name: str) -> Any:
    _box(project, box)
    ref = snapshot_ref(project, box, name)
    try:
        return _store().resolve(ref)
    except errors.ImageNotFound:
        have = [s.name for s in list_snapshots(project, box)]
        raise errors.NotFound(f"box {box} has no snapshot named {name!r}",
                              hint=f"snapshots: {', '.join(have)}" if have else
                              f"it has none; save one with `devbox snapshot save {box} NAME`") from None  # fmt: skip


def _write_spec(c: Any, **changes: Any) -> None:
    c.spec = replace(c.spec, **changes)
    fsutil.write_json(os.path.join(c.dir, "spec.json"), c.spec.to_dict())


def _fresh_dir(d: Path) -> Path | None:
    """Replace directory `d` by an empty one; returns the old one (renamed aside) for removal."""
    old = d.with_name(f".{d.name}.old-{os.getpid()}-{time.monotonic_ns()}")
    if d.exists():
        os.rename(d, old)
    else:
        old = None  # type: ignore[assignment]
    os.mkdir(d, 0o755)
    return old


def restore(project: model.Project, box: str, name: str, *, say: Any = None) -> Any:
    """Bring the box back to snapshot `name`: stop, swap its layers, start, wait until healthy."""
    from devbox import orchestrator
    from devbox.runtime import container as ct
    from devbox.runtime.image.commit import LOWER_IMAGE_LABEL

    say = say or orchestrator._stderr
    t0 = time.monotonic()
    b = _box(project, box)
    snap = _resolve_snapshot(project, box, name)
    store = _store()
    store.ensure_layers(snap)  # every layer must be there before the box is touched
    box_image = snap.manifest.get("annotations", {}).get(ANN_BOX_IMAGE)
    # the snapshot's layers stay referenced while the box runs on them, even if the snapshot is deleted
    store.tag(snap.digest, f"{project.name}-{box}:restored")
    orchestrator._ensure_network(project)
    c = orchestrator.box_container(project, box)
    if c is None:
        img = None
        if box_image:
            with contextlib.suppress(errors.ImageNotFound):
                img = store.resolve(box_image)
        if img is None:
            img = orchestrator.box_image(project, b, say=say)
        c = orchestrator._create_box(project, b, img)
        orchestrator._write_conf(c, b)
    ct.stop(c)
    cdir = Path(c.dir)
    for stale in [*cdir.glob(".upper.old-*"), *cdir.glob(".work.old-*")]:  # left by a killed restore
        shutil.rmtree(stale, ignore_errors=True)
    with c.lock():
        if c.refresh() == ct.RUNNING:
            raise errors.IncorrectStatus(f"box {box} was started again during the restore", hint="retry")
        labels = dict(c.spec.labels)
        labels[LOWER_IMAGE_LABEL] = snap.digest
        changes: dict[str, Any] = {"diff_ids": list(snap.diff_ids), "labels": labels}
        if box_image:
            changes["image_digest"] = box_image
        old = [_fresh_dir(Path(c.upper)), _fresh_dir(Path(c.dir, "work"))]
        _write_spec(c, **changes)
    for d in old:
        if d is not None:
            shutil.rmtree(d, ignore_errors=True)
    orchestrator._write_conf(c, b)
    ct.start(c)
    orchestrator._set_label(c, "devbox.services", b.services_hash())
    result = orchestrator.UpResult(project)
    orchestrator._wait_box(project, b, c, "restored", result)
    result.elapsed = time.monotonic() - t0
    try:
        current = orchestrator.box_image(project, b, only_cached=True)
    except errors.DevboxError:
        current = None
    if box_image and current is not None and current.digest != box_image:
        say(f"box {box}: its Devboxfile image changed since snapshot {name} was saved; "
            "`devbox up` will recreate the box from the new image")  # fmt: skip
    return result


def delete(project: model.Project, box: str, name: str) -> None:
    snap = _resolve_snapshot(project, box, name)
    _store().remove(snapshot_ref(project, box, name))
    del snap
