"""The ``cxraug`` command line: thin Typer commands over the library.

Each command module under ``cxraug/cli`` exposes ``register(app)``; this file only assembles them
and turns user errors (:class:`cxraug.core.errors.CxraugError`) into one line and exit code 2,
and Ctrl-C / SIGINT / SIGTERM (:mod:`cxraug.core.interrupts`) into one line and exit code 130.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
import warnings

import typer

from cxraug import __version__
from cxraug.core.errors import CxraugError, CxraugWarning
from cxraug.core.interrupts import stop_on_signals

app = typer.Typer(
    name="cxraug",
    help="Synthetic chest X-rays for training disease classifiers (Diff-CXR).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules, in the order their commands appear in --help.
COMMAND_MODULES = ("data", "label", "train", "generate", "export", "filter", "synth", "bench", "eval", "quickstart")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cxraug {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Synthetic chest X-rays for training disease classifiers (Diff-CXR)."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"cxraug.cli.{_name}").register(app)


def _usage_error(e: Exception) -> int | None:
    """Exit code for a command-line usage error (already printed as one line), else None.

    Typer >= 0.20 vendors its own click (``typer._click``), whose exceptions are not
    ``click.ClickException``; both are recognised by duck typing rather than by class.
    """
    if type(e).__name__ == "Abort":
        typer.secho("aborted", fg=typer.colors.YELLOW, err=True)
        return 1
    if hasattr(e, "show") and hasattr(e, "exit_code") and hasattr(e, "format_message"):
        e.show()
        return int(e.exit_code)
    return None


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """cxraug's own warnings as one line on stderr; any other warning as Python shows it."""
    if issubclass(category, CxraugWarning):
        typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, print user errors as one line, return the exit code."""
    warnings.showwarning = _show_warning
    with stop_on_signals() as caught:
        try:
            code = _run(argv)
        except KeyboardInterrupt:
            code = 130
    if code == 130 or caught.signum is not None:  # typer returns 130 for a KeyboardInterrupt
        why = f" ({caught.name})" if caught.name else ""
        typer.secho(f"interrupted{why}; finished work is kept: rerun the same command to resume",
                    fg=typer.colors.YELLOW, err=True)
        return 130
    return code


def _run(argv: list[str] | None) -> int:
    """The app's exit code; user errors printed as one line."""
    try:
        code = app(args=argv, prog_name="cxraug", standalone_mode=False)
    except CxraugError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except OSError as e:  # a path the user gave: a file where a folder should be, no permission...
        if os.environ.get("CXRAUG_DEBUG"):
            raise
        typer.secho(f"error: {_os_error(e)} (CXRAUG_DEBUG=1 shows the traceback)",
                    fg=typer.colors.RED, err=True)
        return 2
    except Exception as e:
        shown = _usage_error(e)
        if shown is None:
            raise
        return shown
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def _os_error(e: OSError) -> str:
    """``FILE: what went wrong; the fix`` for an OSError (a full disk is no path mistake)."""
    where = f"{e.filename}: " if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return (f"{where}{e.strerror}; free some space (or raise the quota) and rerun the same "
                "command: finished work is kept and resumed")
    return f"{where}{e.strerror or e}; check the path"


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
