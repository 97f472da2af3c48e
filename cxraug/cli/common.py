"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import os
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


#: The largest square side an image-size option takes: larger ones only exhaust memory.
MAX_IMAGE_SIZE = 4096
MAX_SEED = 2**63 - 1


def check_number(option: str, value: float | None, low: float | None = None,
                 high: float | None = None) -> None:
    """Refuse, naming ``option`` as typed, a value that is NaN, infinite or outside
    ``[low, high]`` (None: unset, nothing to check). For checks before any work."""
    import math

    from cxraug.core.errors import CxraugError

    if value is None:
        return
    ok = math.isfinite(value) and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        if low is not None and high is not None:
            want = f"between {low} and {high}"
        else:
            want = f">= {low}" if low is not None else f"<= {high}"
        kind = "a finite number " if isinstance(value, float) else ""
        raise CxraugError(f"{option} {value}: must be {kind}{want}")


def table(title: str, columns: list[str], rows: list[list[object]]) -> Table:
    t = Table(title=title, show_lines=False)
    for c in columns:
        t.add_column(c, justify="left" if c == columns[0] else "right")
    for r in rows:
        t.add_row(*[str(v) for v in r])
    return t


def out_dir_ok(path: Path, overwrite: bool, what: str = "output") -> None:
    """Refuse to write into an existing non-empty folder unless asked to."""
    from cxraug.core.errors import CxraugError

    if path.exists() and any(path.iterdir()) and not overwrite:
        raise CxraugError(f"{path}: {what} folder exists and is not empty; pass --overwrite or "
                          "another --out")


def writable_out(path: Path, option: str = "--out", folder: bool = True) -> Path:
    """Refuse, in one line and before any work, an output path that cannot be written.

    ``folder``: the output is a folder (the path itself must not be a file); otherwise a file
    (it must not be a folder). Either way no parent may be a regular file (``afile.txt/sub``)
    and the nearest existing folder must be writable.
    """
    from cxraug.core.errors import CxraugError

    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise CxraugError(f"{option} {path}: is a file, not a folder; pass a folder path")
        if not folder and path.is_dir():
            raise CxraugError(f"{option} {path}: is a folder; pass a file path")
    nearest = path if path.is_dir() else None
    for parent in path.parents:  # nearest first; "." last for a relative path
        if nearest is not None:
            break
        if parent.exists():
            if not parent.is_dir():
                raise CxraugError(f"{option} {path}: {parent} is a file, not a folder")
            nearest = parent
    if nearest is not None and not os.access(nearest, os.W_OK | os.X_OK):
        raise CxraugError(f"{option} {path}: no permission to write in {nearest}")
    return path


def run_lock(out: Path, what: str = "run"):
    """One writer per output folder (:func:`cxraug.core.locks.folder_lock`); under
    ``accelerate launch`` only the main process (rank 0) takes it, the others write through it."""
    import contextlib

    from cxraug.core.locks import folder_lock

    if int(os.environ.get("RANK", "0") or 0) != 0:
        return contextlib.nullcontext()
    return folder_lock(out, what)


def classifier_folder(path: Path | None) -> Path | None:
    """``--classifier DIR``: a Classifier folder, or a ``cxraug train classifier`` run folder
    (whose classifier is ``DIR/model``)."""
    if path is not None and not (path / "config.json").is_file() \
            and (path / "model" / "config.json").is_file():
        return path / "model"
    return path


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
    from cxraug.data.reference import REFERENCE_NAME, Reference, check_known

    ref = pipe.run.root / REFERENCE_NAME
    if ref.is_file():
        wanted = [L.OBSERVATIONS[i] for i in np.flatnonzero(np.asarray(vec) == 1)]
        check_known(wanted, Reference.load(ref).train.labels, model)


Opt = Optional
