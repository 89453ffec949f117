"""The `devbox` command. Verbs live one per module; each module has `register(app)`.

Modules keep heavy imports (pyroute2, supervisor, yaml, httpx) inside their command functions so that
every devbox command starts fast.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from devbox.errors import DevboxError

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


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show every step and its timing.")) -> None:
    from devbox import log

    log.setup(debug)


def _register() -> None:
    for name in VERB_MODULES:
        try:
            mod = importlib.import_module(f"devbox.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"devbox.cli.{name}":
                continue
            raise
        mod.register(app)


def fail(err: DevboxError) -> int:
    msg = f"devbox: error: {err.message}"
    if err.hint:
        msg += f" ({err.hint})"
    print(msg, file=sys.stderr)
    return err.exit_code


def main() -> None:
    _register()
    try:
        rv = app(standalone_mode=False)
    except DevboxError as e:
        sys.exit(fail(e))
    except KeyboardInterrupt:
        print("devbox: interrupted", file=sys.stderr)
        sys.exit(130)
    except (typer.Abort,):
        sys.exit(1)
    except Exception as e:  # usage errors and the like (typer 0.26+ vendors its own click)
        exit_code = getattr(e, "exit_code", None)
        if isinstance(e, typer.Exit) or type(e).__name__ == "Exit":
            sys.exit(exit_code or 0)
        if hasattr(e, "show") and isinstance(exit_code, int):  # a ClickException: usage text + message
            e.show()
            sys.exit(exit_code)
        if os.environ.get("DEVBOX_DEBUG"):
            raise
        print(f"devbox: internal error: {type(e).__name__}: {e} (run with DEVBOX_DEBUG=1 for a traceback)",
              file=sys.stderr)  # fmt: skip
        sys.exit(125)
    sys.exit(rv if isinstance(rv, int) else 0)
