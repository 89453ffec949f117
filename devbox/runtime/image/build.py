"""Build steps, each a cached layer on top of a parent image.

A step's cache key is sha256(parent manifest digest, the step, the content of the files it copies):
an unchanged step is a lookup (milliseconds); a changed step rebuilds from there on.

  run      runs the command in a throwaway container on the parent image (default network, so it can
           download), streams its output live, and captures the container's overlay upper dir as the
           layer.
  copy     copies host files into a fresh directory laid out as the image expects and tars it; no
           container is needed.
  env, workdir, user
           change the image config only (an empty layer in the history, as docker records it).
"""

from __future__ import annotations

import copy as _copy
import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from devbox import errors, fsutil, paths
from devbox.runtime.image.store import Image, ImageStore

# mount targets the engine creates (empty) in a container's upper dir; never part of a layer
_ENGINE_FILES = ("etc/hosts", "etc/hostname", "etc/resolv.conf")


@dataclass(frozen=True)
class Step:
    kind: str  # run | copy | env | workdir | user
    command: list[str] = field(default_factory=list)
    source: str | None = None
    target: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None

    def describe(self) -> str:
        if self.kind == "run":
            cmd = self.command
            return "RUN " + (cmd[2] if cmd[:2] == ["/bin/sh", "-c"] and len(cmd) == 3 else json.dumps(cmd))
        if self.kind == "copy":
            return f"COPY {self.source} {self.target}"
        if self.kind == "env":
            return "ENV " + " ".join(f"{k}={v}" for k, v in self.env.items())
        if self.kind == "workdir":
            return f"WORKDIR {self.target}"
        return f"USER {self.user}"


def content_hash(path: Path) -> str:
    """sha256 over names, modes, symlink targets and contents of a file or tree (mtimes excluded)."""
    h = hashlib.sha256()
    if not path.exists() and not path.is_symlink():
        raise errors.BuildError(f"copy source {path} does not exist", hint="fix the path in the Devboxfile")
    entries = [path] if not path.is_dir() or path.is_symlink() else sorted(path.rglob("*"))
    for p in entries:
        st = p.lstat()
        rel = "." if p == path else p.relative_to(path).as_posix()
        h.update(f"{rel}\0{stat.S_IMODE(st.st_mode):o}\0{stat.S_IFMT(st.st_mode)}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(p).encode())
        elif stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()


def _cache_file(key: str) -> Path:
    return Path(paths.cache_dir(), "build", key)


def _descriptors(img: Image) -> list[dict[str, Any]]:
    return [dict(d) for d in img.manifest.get("layers", [])]


def _child_config(parent: Image, step: Step) -> dict[str, Any]:
    cfg = _copy.deepcopy(parent.config)
    cfg.setdefault("config", {})
    cfg["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return cfg


def _history(cfg: dict[str, Any], step: Step, empty: bool) -> None:
    entry: dict[str, Any] = {"created": cfg["created"], "created_by": f"devbox build: {step.describe()}"}
    if empty:
        entry["empty_layer"] = True
    cfg.setdefault("history", []).append(entry)


def _env_set(env_list: list[str], updates: dict[str, str]) -> list[str]:
    env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env_list)
    env.update(updates)
    return [f"{k}={v}" for k, v in env.items()]


def _key(parent: Image, step: Step) -> str:
    extra = content_hash(Path(step.source)) if step.kind == "copy" and step.source else ""
    raw = json.dumps({"parent": parent.digest, "step": asdict(step), "content": extra}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()


def lookup_chain(store: ImageStore, base: Image, steps: list[Step]) -> Image | None:
    """The image `build` would return if every step is cached, else None (builds nothing)."""
    current = base
    for step in steps:
        nxt = _lookup(store, _key(current, step))
        if nxt is None:
            return None
        current = nxt
    return current


def build(store: ImageStore, base: Image, steps: list[Step], *, tag: str | None = None, no_cache: bool = False,
          network: str = "default", out: Callable[[str], None] | None = None) -> Image:  # fmt: skip
    """Apply `steps` to `base`; returns the final image (tagged `tag` when given)."""
    say = out or (lambda s: print(s, file=sys.stderr, flush=True))
    current = base
    total = len(steps)
    for i, step in enumerate(steps, 1):
        key = _key(current, step)
        cached = None if no_cache else _lookup(store, key)
        if cached is not None:
            say(f"[{i}/{total}] {step.describe()} (cached)")
            current = cached
            continue
        say(f"[{i}/{total}] {step.describe()}")
        t0 = time.monotonic()
        current = _run_step(store, current, step, network)
        fsutil.atomic_write(_cache_file(key), current.digest)
        say(f"[{i}/{total}] done in {time.monotonic() - t0:.1f}s")
    if tag:
        current = store.tag(current.digest, tag)
    return current


def _lookup(store: ImageStore, key: str) -> Image | None:
    try:
        digest = _cache_file(key).read_text().strip()
        return store.resolve(digest)
    except (FileNotFoundError, errors.ImageNotFound):
        return None


def _run_step(store: ImageStore, parent: Image, step: Step, network: str) -> Image:
    cfg = _child_config(parent, step)
    c = cfg["config"]
    if step.kind == "env":
        c["Env"] = _env_set(c.get("Env") or [], step.env)
        _history(cfg, step, empty=True)
        return store.write_image(cfg, _descriptors(parent))
    if step.kind == "user":
        c["User"] = step.user or ""
        _history(cfg, step, empty=True)
        return store.write_image(cfg, _descriptors(parent))
    if step.kind == "workdir":
        c["WorkingDir"] = step.target or "/"
        # create it as a layer, so a later run step's cwd exists even as a non-root user
        return _layer_from_tree(store, parent, cfg, step, lambda root: _mkdirs(root, step.target or "/"))
    if step.kind == "copy":
        return _layer_from_tree(store, parent, cfg, step, lambda root: _copy_into(root, step))
    if step.kind == "run":
        return _run_in_container(store, parent, cfg, step, network)
    raise errors.BuildError(f"unknown build step kind {step.kind!r}")


def _mkdirs(root: Path, target: str) -> None:
    (root / target.lstrip("/")).mkdir(parents=True, exist_ok=True)


def _copy_into(root: Path, step: Step) -> None:
    assert step.source and step.target
    src = Path(step.source)
    dst = root / step.target.lstrip("/")
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
    else:
        if step.target.endswith("/"):
            dst = dst / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)
    for p in [dst, *dst.rglob("*")] if dst.is_dir() else [dst]:
        os.lchown(p, 0, 0)


def _layer_from_tree(store: ImageStore, parent: Image, cfg: dict[str, Any], step: Step,
                     fill: Callable[[Path], None]) -> Image:  # fmt: skip
    os.makedirs(paths.tmp_dir(), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=paths.tmp_dir(), prefix="build-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        fill(root)
        return _commit_tree(store, parent, cfg, step, root, Path(tmp))


def _commit_tree(store: ImageStore, parent: Image, cfg: dict[str, Any], step: Step, tree: Path, tmp: Path) -> Image:
    from devbox.runtime.image.unpack import tar_from_dir

    tar = tmp / "layer.tar"
    tar_from_dir(tree, tar)
    desc, diff_id = store.add_layer_tar(tar)
    cfg.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    cfg["rootfs"]["diff_ids"] = list(parent.diff_ids) + [diff_id]
    _history(cfg, step, empty=False)
    return store.write_image(cfg, _descriptors(parent) + [desc])


def _run_in_container(store: ImageStore, parent: Image, cfg: dict[str, Any], step: Step, network: str) -> Image:
    from devbox.runtime import container as ct

    c = cfg["config"]
    fields = {
        "name": f"build-{os.urandom(4).hex()}",
        "image": parent.ref or parent.digest,
        "image_digest": parent.digest,
        "diff_ids": list(parent.diff_ids),
        "args": list(step.command),
        "env": list(c.get("Env") or []) + ["DEBIAN_FRONTEND=noninteractive"],
        "cwd": c.get("WorkingDir") or "/",
        "user": c.get("User") or None,
        "network": network,
        "labels": {"devbox.build": "1"},
    }
    box = ct.create(fields)
    try:
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = ct.start(box, foreground=True, stdio=(null, 2, 2))
        finally:
            os.close(null)
        assert st is not None
        code = ct.wait_foreground(st)
        if code != 0:
            raise errors.BuildError(f"build step `{step.describe()}` failed with exit code {code}",
                                    hint="its output is above; fix the step and run again")  # fmt: skip
        upper = Path(box.upper)
        for rel in _ENGINE_FILES:
            p = upper / rel
            if p.is_file() and not p.is_symlink() and p.stat().st_size == 0:
                p.unlink()
        os.makedirs(paths.tmp_dir(), exist_ok=True)
        with tempfile.TemporaryDirectory(dir=paths.tmp_dir(), prefix="build-") as tmp:
            return _commit_tree(store, parent, cfg, step, upper, Path(tmp))
    finally:
        ct.remove(box, force=True)
