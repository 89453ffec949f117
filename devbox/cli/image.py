"""`devbox image ...`: bootstrap, import, ls, inspect, rm, tag, history, save, load, prune."""

from __future__ import annotations

from pathlib import Path

import typer

from devbox import errors
from devbox.cli.util import human_size as _human

image_app = typer.Typer(no_args_is_help=True, help="Manage local images.")


def register(app: typer.Typer) -> None:
    app.add_typer(image_app, name="image")


def _store():  # type: ignore[no-untyped-def]
    from devbox.cli.util import require_root
    from devbox.runtime.image.store import ImageStore

    require_root()
    return ImageStore()


def _split_ref(ref: str | None) -> tuple[str, str]:
    if not ref:
        return "<none>", "<none>"
    name, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
    return name, tag or "<none>"


@image_app.command("bootstrap")
def bootstrap_cmd(
    ref: str = typer.Argument(..., metavar="debian:SUITE", help="e.g. debian:bookworm or debian:trixie"),
    include: str = typer.Option("", "--include", help="Extra packages, comma-separated."),
) -> None:
    """Build debian:SUITE locally with mmdebstrap from this machine's apt mirror."""
    from devbox.errors import ConfigError
    from devbox.runtime.image import bootstrap, reference

    store = _store()
    p = reference.parse(ref)
    if p.repository != "library/debian" or not p.tag or p.tag == "latest" or p.digest:
        raise ConfigError(f"cannot bootstrap {ref!r}", hint="only debian:SUITE can be bootstrapped, e.g. debian:bookworm")
    pkgs = [x for x in include.split(",") if x.strip()]
    img = bootstrap.bootstrap_debian(store, p.tag, ref=reference.normalize(ref), packages=pkgs)
    print(f"{img.ref} {img.digest}")


@image_app.command("import")
def import_cmd(path: Path = typer.Argument(..., help="rootfs tar(.gz/.zst), docker save archive, OCI archive or layout"),
               name: str = typer.Argument(..., metavar="NAME[:TAG]")) -> None:  # fmt: skip
    """Import an archive or a root filesystem tar as an image."""
    from devbox.runtime.image import importer

    store = _store()
    img = importer.import_archive(store, path, name)
    print(f"{img.ref} {img.digest}")


@image_app.command("load")
def load_cmd(input: Path = typer.Option(..., "-i", "--input", help="docker save or OCI archive")) -> None:
    """Load every image of a docker save / OCI archive, with the names it carries."""
    from devbox.runtime.image import importer

    store = _store()
    for img in importer.load_archive(store, input):
        print(f"loaded: {img.ref or img.digest}")


@image_app.command("save")
def save_cmd(image: str = typer.Argument(..., metavar="IMG"),
             output: Path = typer.Option(..., "-o", "--output", help="archive to write"),
             format: str = typer.Option("oci", "--format", help="oci or docker")) -> None:  # fmt: skip
    """Write an image to an archive (OCI archive, or docker-loadable)."""
    from devbox.runtime.image import importer

    store = _store()
    importer.export_image(store, image, output, format=format)


@image_app.command("ls")
def ls_cmd(json_out: bool = typer.Option(False, "--json", help="JSON output."),
           quiet: bool = typer.Option(False, "-q", "--quiet", help="Only image ids.")) -> None:  # fmt: skip
    """List local images (one line per tag)."""
    from devbox.cli.util import print_json, print_table

    store = _store()
    images = store.list()
    if quiet:
        seen: list[str] = []
        for img in images:
            if img.short_id not in seen:
                seen.append(img.short_id)
        print("\n".join(seen)) if seen else None
        return
    if json_out:
        print_json([{"ref": i.ref, "digest": i.digest, "id": i.short_id, "created": i.created, "size": i.size,
                     "layers": len(i.diff_ids)} for i in images])  # fmt: skip
        return
    rows = []
    for i in images:
        repo, tag = _split_ref(i.ref)
        rows.append([repo, tag, i.short_id, i.created or "", _human(i.size)])
    print_table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows)


@image_app.command("inspect")
def inspect_cmd(image: str = typer.Argument(..., metavar="IMG")) -> None:
    """Show an image's manifest, config and layers as JSON."""
    from devbox.cli.util import print_json

    store = _store()
    img = store.resolve(image)
    print_json({
        "Id": img.digest,
        "RepoTags": store.tags_of(img.digest),
        "Created": img.created,
        "Architecture": img.config.get("architecture"),
        "Os": img.config.get("os"),
        "Size": img.size,
        "Config": img.config.get("config") or {},
        "RootFS": img.config.get("rootfs") or {},
        "History": img.config.get("history") or [],
        "Manifest": img.manifest,
        "LayerDirs": [str(store.layer_dir(d)) for d in img.diff_ids],
    })  # fmt: skip


@image_app.command("history")
def history_cmd(image: str = typer.Argument(..., metavar="IMG")) -> None:
    """Show how an image's layers were made (newest first)."""
    from devbox.cli.util import print_table

    store = _store()
    img = store.resolve(image)
    sizes = [x.get("size", 0) for x in img.layers]
    rows = []
    li = 0
    entries = img.config.get("history") or []
    out = []
    for h in entries:
        size = ""
        if not h.get("empty_layer"):
            size = _human(sizes[li]) if li < len(sizes) else ""
            li += 1
        out.append([h.get("created", ""), (h.get("created_by") or "")[:100], size, h.get("comment", "")])
    rows = list(reversed(out))
    print_table(["CREATED", "CREATED BY", "SIZE", "COMMENT"], rows)


@image_app.command("tag")
def tag_cmd(src: str = typer.Argument(..., metavar="SRC"), dst: str = typer.Argument(..., metavar="DST")) -> None:
    """Give an image another name."""
    store = _store()
    store.tag(src, dst)


@image_app.command("rm")
def rm_cmd(images: list[str] = typer.Argument(..., metavar="IMG..."),
           force: bool = typer.Option(False, "-f", "--force", help="Remove every tag of an image given by id.")) -> None:  # fmt: skip
    """Remove images (untag; the manifest goes with its last tag; `prune` frees the space)."""
    from devbox.runtime import container as ct

    store = _store()
    for ref in images:
        img = store.resolve(ref)
        users = ct.users_of_image(img.digest)
        if users and not force:
            raise errors.IncorrectStatus(
                f"image {ref} is used by container {users[0].name}" + (f" and {len(users) - 1} more" if len(users) > 1 else ""),
                hint=f"remove the container first (`devbox rm -f {users[0].name}`) or use `devbox image rm -f`")
        for line in store.remove(ref, force=force):
            print(line)


@image_app.command("prune")
def prune_cmd() -> None:
    """Delete blobs and unpacked layers that no image (and no container) uses."""
    store = _store()
    from devbox.runtime import container as ct

    keep = ct.used_layers()  # layers of existing containers stay, even if their image was removed
    res = store.prune(keep_layers=keep)
    print(f"removed {res['blobs']} blobs and {res['layers']} layers, freed {_human(res['bytes'])}")
