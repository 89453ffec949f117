"""The `devbox` command. Verbs live one per module; each module has `register(app)`.

Modules keep heavy imports (pyroute2, supervisor, yaml, httpx) inside their command functions so that
every devbox command starts fast. The typer app lives in devbox/cli/_typer_app.py and is imported only
when neither cli/runner.py (`run`) nor cli/up.py (`up`, `status`) takes argv: those verbs with simple
options run without typer, which alone costs ~100 ms.
"""

from __future__ import annotations

import os
import sys

from devbox.errors import DevboxError

TYPE_CHECKING = False  # typing costs ~4 ms to import; only type checkers need it here
if TYPE_CHECKING:
    from typing import Any

_FROM_APP = ("app", "VERB_MODULES", "VERB_OF", "_verb", "_register", "_root", "_version")


def __getattr__(name: str) -> Any:  # devbox.cli.app, devbox.cli._register, ... as before, on demand
    if name in _FROM_APP:
        from devbox.cli import _typer_app

        return getattr(_typer_app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def fail(err: DevboxError) -> int:
    msg = f"devbox: error: {err.message}"
    if err.hint:
        msg += f" ({err.hint})"
    print(msg, file=sys.stderr)
    return err.exit_code


def run_fast(debug: bool, fn: Any, **kw: Any) -> int:
    """Run a verb that bypasses typer (cli/runner.py, cli/up.py) with the same error handling as main():
    DevboxError -> its one line, ^C -> 130, anything else -> one `internal error` line (traceback with
    DEVBOX_DEBUG=1). Returns the exit code."""
    from devbox import log

    log.setup(debug)
    try:
        rv = fn(**kw)
    except DevboxError as e:
        return fail(e)
    except KeyboardInterrupt:
        print("devbox: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("DEVBOX_DEBUG"):
            raise
        print(f"devbox: internal error: {type(e).__name__}: {e} (run with DEVBOX_DEBUG=1 for a traceback)",
              file=sys.stderr)  # fmt: skip
        return 125
    return rv if isinstance(rv, int) else 0


def _leave(rv: int) -> None:
    """Exit at once with `rv` after flushing stdout/stderr: the interpreter's own teardown (modules,
    GC) costs ~10 ms per command and has nothing left to do for a verb that finished. Threads still
    running (none on these paths today) get the ordinary exit that waits for them."""
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        sys.exit(rv)
    os._exit(rv)


def main() -> None:
    from devbox.cli import runner  # `run` without typer (cli/runner.py)

    rv = runner.main(sys.argv[1:])
    if rv is not None:
        _leave(rv)
    from devbox.cli import up as fast

    rv = fast.main(sys.argv[1:])
    if rv is not None:
        _leave(rv)
    import typer

    from devbox.cli._typer_app import _register, app

    _register(sys.argv[1:])
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
