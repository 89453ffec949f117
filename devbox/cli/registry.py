"""`devbox pull | push | login | logout`: images to and from OCI registries."""

from __future__ import annotations

import sys

import typer


def register(app: typer.Typer) -> None:
    app.command("pull")(pull_cmd)
    app.command("push")(push_cmd)
    app.command("login")(login_cmd)
    app.command("logout")(logout_cmd)


def pull_cmd(
    ref: str = typer.Argument(..., metavar="[REGISTRY/]NAME[:TAG|@sha256:DIGEST]"),
    platform: str = typer.Option(
        None, "--platform", help="OS/ARCH or OS/ARCH/VARIANT (default: this machine's)."
    ),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress; print only the image digest."),
) -> None:
    """Pull an image from a registry (Docker Hub for short names like `python:3.12`)."""
    from devbox.cli.util import require_root
    from devbox.runtime.image import pull as pull_mod
    from devbox.runtime.image.store import ImageStore

    require_root()
    prog = pull_mod.Progress(enabled=False if quiet else None)
    img = pull_mod.pull(ImageStore(), ref, platform=platform, progress=prog)
    print(img.digest if quiet else f"{img.ref or ref} {img.digest}")


def push_cmd(
    image: str = typer.Argument(..., metavar="IMG", help="Local image (name:tag or id)."),
    dest: str = typer.Argument(None, metavar="[REGISTRY/]NAME[:TAG]", help="Where to push (default: IMG)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress; print only the manifest digest."),
) -> None:
    """Push a local image to a registry."""
    from devbox.cli.util import require_root
    from devbox.runtime.image import push as push_mod
    from devbox.runtime.image.pull import Progress
    from devbox.runtime.image.store import ImageStore

    require_root()
    res = push_mod.push(ImageStore(), image, dest, progress=Progress(enabled=False if quiet else None))
    print(res.digest if quiet else f"{res.ref} {res.digest}")


def login_cmd(
    registry: str = typer.Argument(..., metavar="REGISTRY", help="e.g. registry.example:5000 or docker.io"),
    user: str = typer.Option(None, "-u", "--username", help="User name (asked for when missing)."),
    password: str = typer.Option(None, "-p", "--password", help="Password (prefer --password-stdin)."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
) -> None:
    """Check credentials against a registry, then store them (docker config.json format)."""
    from devbox.errors import ConfigError
    from devbox.runtime.image import auth
    from devbox.runtime.image import registry as reg_mod

    registry = _registry_name(registry)
    if password_stdin:
        if password:
            raise ConfigError("--password and --password-stdin exclude each other", hint="use one of them")
        password = sys.stdin.read().rstrip("\r\n")
    if not user:
        if not sys.stdin.isatty():
            raise ConfigError("no user name given", hint="use -u USER")
        user = typer.prompt("Username")
    if not password:
        if password_stdin or not sys.stdin.isatty():
            raise ConfigError("no password given", hint="pipe it in with --password-stdin")
        password = typer.prompt("Password", hide_input=True)
    with reg_mod.RegistryClient(registry, credentials=(user, password)) as c:
        c.check_login()
    path = auth.save_credentials(registry, user, password)
    print(f"Login succeeded (credentials saved in {path})", file=sys.stderr)


def logout_cmd(registry: str = typer.Argument(..., metavar="REGISTRY")) -> None:
    """Forget the stored credentials for a registry."""
    from devbox.errors import NotFound
    from devbox.runtime.image import auth

    registry = _registry_name(registry)
    if not auth.remove_credentials(registry):
        raise NotFound(f"not logged in to {registry}", hint=f"credentials live in {auth.auth_file()}")
    print(f"Removed credentials for {registry}", file=sys.stderr)


def _registry_name(s: str) -> str:
    """`https://reg:5000/` -> `reg:5000`; Docker Hub aliases -> `docker.io`."""
    from devbox.errors import ConfigError
    from devbox.runtime.image.reference import is_registry

    for prefix in ("https://", "http://"):
        if s.startswith(prefix):
            s = s[len(prefix) :]
    s = s.rstrip("/")
    if s.endswith("/v1") or s.endswith("/v2"):
        s = s[:-3]
    if s in ("index.docker.io", "registry-1.docker.io", "docker.io"):
        return "docker.io"
    if not s or "/" in s or not is_registry(s):
        raise ConfigError(f"invalid registry {s!r}", hint="give a host[:port], e.g. registry.example:5000")
    return s
