"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()

DataOpt = typer.Option(None, "--data", "-d",
                       help="Dataset folder or manifest CSV; 'sample:kermany' / 'sample:nih14' for "
                            "the embedded real sample (the default).")
KindOpt = typer.Option("auto", "--dataset", help="Adapter: auto, kermany, nih14, chexpert, mimic, "
                                                   "manifest, folder.")
SetOpt = typer.Option(None, "--set", help="Config override KEY=VALUE (repeatable), e.g. --set train.steps=100")
RecipeOpt = typer.Option(None, "--recipe", "-r", help="YAML recipe (see recipes/).")
DryRunOpt = typer.Option(False, "--dry-run", help="Print the resolved config and exit.")


def table(title: str, columns: list[str], rows: list[list[object]]) -> Table:
    t = Table(title=title, show_lines=False)
    for c in columns:
        t.add_column(c, justify="left" if c == columns[0] else "right")
    for r in rows:
        t.add_row(*[str(v) for v in r])
    return t


def out_dir_ok(path: Path, overwrite: bool, what: str = "output") -> None:
    """Refuse to write into an existing non-empty folder unless asked to."""
    from cxraug.errors import CxraugError

    if path.exists() and any(path.iterdir()) and not overwrite:
        raise CxraugError(f"{path}: {what} folder exists and is not empty; pass --overwrite or "
                          "another --out")


def default_folder_name(labels: str, n: int) -> str:
    """``pneumonia,effusion`` and 5000 -> ``pneumonia+effusion-5000`` (safe as a folder name)."""
    import re

    parts = [re.sub(r"[^a-z0-9]+", "-", x.strip().lower()).strip("-") for x in labels.split(",")]
    return "+".join(p for p in parts if p) + f"-{n}"


def check_model_labels(pipe, model: str, vec) -> None:
    """Refuse target labels a packaged model never saw a positive image of (run folders are
    checked by cxraug synth against their data)."""
    import numpy as np

    from cxraug.data import labels as L
    from cxraug.reference import REFERENCE_NAME, Reference, check_known

    ref = pipe.run.root / REFERENCE_NAME
    if ref.is_file():
        wanted = [L.OBSERVATIONS[i] for i in np.flatnonzero(np.asarray(vec) == 1)]
        check_known(wanted, Reference.load(ref).train.labels, model)


Opt = Optional
