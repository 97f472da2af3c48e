"""``cxraug export``: package a trained run as a self-contained model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cxraug.cli.common import MAX_IMAGE_SIZE, check_number, console, writable_out


def export(run: Path = typer.Argument(..., help="Run folder from cxraug train."),
           out: Path = typer.Option(..., "--out", "-o", help="Model folder to write."),
           dtype: str = typer.Option("float16", "--dtype", help="Weight storage: float16, bfloat16 or float32."),
           reference_size: int = typer.Option(64, "--reference-size", help="Side of the training-image copies kept for the memorisation gate."),
           card: Optional[Path] = typer.Option(None, "--card", help="Model card (markdown) to ship instead of the run's README.md."),
           overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing model folder.")) -> None:
    """Package a run for others: inference weights (fp16 by default), the real-data reference that
    cxraug synth's gates need (so the training data need not be at hand), and the model card.
    The result works anywhere --model is accepted."""
    writable_out(out)
    from cxraug.core.errors import CxraugError
    from cxraug.diffusion.export import export_model, folder_size

    check_number("--reference-size", reference_size, 8, MAX_IMAGE_SIZE)
    if card is not None and not card.is_file():
        raise CxraugError(f"--card {card}: file not found")
    folder = export_model(run, out, dtype, reference_size, card, overwrite)
    console.print(f"[bold green]exported[/]: {folder} ({folder_size(folder) / 1e6:.1f} MB)")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
