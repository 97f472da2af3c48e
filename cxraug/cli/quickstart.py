"""``cxraug quickstart``: the whole loop on the embedded real sample, sized for a laptop CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cxraug.cli.common import DataOpt, console, table


def quickstart(data: Optional[str] = DataOpt,
               out: Path = typer.Option(Path("runs/quickstart"), "--out", "-o", help="Run folder."),
               size: int = typer.Option(64, help="Image size in pixels for the CPU recipe."),
               seed: int = typer.Option(0, help="Seed for splits, subsets and training.")) -> None:
    """Load the data, make patient-level splits and nested real subsets, cache the images.

    Steps still to come (see the issues): train a small Diff-CXR, synthesise a cohort, bench the
    real / real+dup / real+synth arms at 1% and 100% real data.
    """
    from cxraug.data.adapters import load_dataset, resolve_data
    from cxraug.data.cache import cached_images
    from cxraug.data.splits import real_subset, splits_for

    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(resolve_data(data))
    ds = splits_for(ds, out / "splits.csv", seed=seed)
    images, ds, skipped = cached_images(ds, size)
    train = ds.where_split("train")
    rows = []
    for frac in (0.01, 0.1, 1.0):
        sub = real_subset(train, frac, seed=seed)
        rows.append([f"{frac:.0%}", len(sub), sub.table["patient_id"].nunique(),
                     int((sub.labels == 1).sum(axis=0)[6])])
    console.print(f"[bold]{ds.name}[/]: {len(ds)} images cached at {size}px; splits in {out / 'splits.csv'}")
    console.print(table("real training subsets (nested, patient-level)",
                        ["fraction", "images", "patients", "pneumonia+"], rows))


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
