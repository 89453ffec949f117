"""The typer app of the `devbox` command (see devbox/cli/__init__.py); imported only when argv is not
one that devbox/cli/up.py runs without typer."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Per-project development environments: boxes running supervisord on devbox's own engine.",
)

# Each of these modules defines register(app). Order is the order in `devbox --help`.
VERB_MODULES = [
    "project",  # init up status logs shell exec(box) restart halt destroy reload provision
    "watch",  # watch
    "container",  # run ps exec logs stop kill rm
    "image",  # image ..., commit, pull, push, login, logout
    "network",  # network create/ls/rm
    "registry",  # pull push login logout
    "snapshot",  # commit, snapshot save/restore/list/delete, lock
]


def _version(value: bool) -> None:
    if value:
        from devbox import __version__

        print(f"devbox {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show every step and its timing."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    from devbox import log

    log.setup(debug)


# verb -> module, so that a command imports only the CLI module it needs (each costs 5-30 ms)
VERB_OF = {
    **dict.fromkeys(["init", "up", "status", "shell", "restart", "halt", "destroy", "reload", "provision"], "project"),
    **dict.fromkeys(["run", "start", "ps", "exec", "logs", "stop", "kill", "rm"], "container"),
    "image": "image", "network": "network", "watch": "watch",
    **dict.fromkeys(["pull", "push", "login", "logout"], "registry"),
    **dict.fromkeys(["commit", "snapshot", "lock"], "snapshot"),
}  # fmt: skip


def _verb(argv: list[str]) -> str | None:
    for a in argv:
        if not a.startswith("-"):
            return a
    return None


def _register(argv: list[str] | None = None) -> None:
    only = VERB_OF.get(_verb(argv or []) or "")
    for name in [only] if only else VERB_MODULES:
        try:
            mod = importlib.import_module(f"devbox.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"devbox.cli.{name}":
                continue
            raise
        mod.register(app)
