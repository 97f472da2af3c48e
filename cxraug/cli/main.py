"""The ``cxraug`` command line: thin Typer commands over the library.

Each command module under ``cxraug/cli`` exposes ``register(app)``; this file only assembles them
and turns user errors (:class:`cxraug.errors.CxraugError`) into one line and exit code 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from cxraug import __version__
from cxraug.errors import CxraugError

app = typer.Typer(
    name="cxraug",
    help="Synthetic chest X-rays for training disease classifiers (Diff-CXR).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules, in the order their commands appear in --help.
COMMAND_MODULES = ("data", "label", "train", "filter", "synth", "bench", "eval", "quickstart")


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


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, print user errors as one line, return the exit code."""
    try:
        app(args=argv, prog_name="cxraug", standalone_mode=False)
    except CxraugError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        return 2
    except KeyboardInterrupt:
        typer.secho("interrupted; rerun the same command to resume", fg=typer.colors.YELLOW, err=True)
        return 130
    except typer.Exit as e:
        return e.exit_code
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return e.exit_code
        if isinstance(e, click.exceptions.Abort):
            return 1
        raise
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
