"""``cxraug data``: inspect datasets, make splits and subsets, fill the image cache."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cxraug.cli.common import DataOpt, KindOpt, console, table
from cxraug.data import labels as L

data_app = typer.Typer(help="Inspect datasets: images, patients and positives per label and "
                            "patient-level split (splits are made by train, bench and train classifier).",
                       no_args_is_help=True)


@data_app.command("info")
def info(data: Optional[str] = DataOpt, kind: str = KindOpt,
         iu: bool = typer.Option(False, "--iu", help="The IU-Xray reports shipped in torchxrayvision."),
         all_views: bool = typer.Option(False, "--all-views", help="Keep lateral views."),
         splits: bool = typer.Option(True, help="Also show counts per assigned split."),
         seed: int = typer.Option(0, help="Split seed.")) -> None:
    """Counts per split and label for a dataset (default: the embedded Kermany sample).

    Image files the dataset's table lists but that do not exist are counted and named after the
    table, and the command then exits with code 2 (every other command refuses such a dataset).
    """
    from cxraug.cli.common import MAX_SEED, check_number
    from cxraug.core.errors import DataError
    from cxraug.data.adapters import load_dataset, missing_files, missing_message, resolve_data

    check_number("--seed", seed, 0, MAX_SEED)
    from cxraug.data.splits import assign_splits

    if iu:
        from cxraug.data.layouts import iu as load_iu

        ds = load_iu(Path(data) if data else None)
    else:
        ds = load_dataset(resolve_data(data), kind, frontal=not all_views, missing="keep")
    absent = missing_files(ds)
    console.print(f"[bold]{ds.name}[/]: {len(ds)} images, {ds.table['patient_id'].nunique()} patients, "
                  f"reports: {'yes' if ds.has_reports() else 'no'}  ({ds.root})")
    for f in ds.filters:
        console.print(f"  filter: {f}")
    by = None
    if splits and len(ds) > 1:
        ds = assign_splits(ds, seed=seed)
        by = "assigned_split"
        for f in ds.filters[len(ds.filters) - 1:]:
            if "official test split" in f:
                console.print(f"  split: {f}")
    groups = ([g for g in ("train", "val", "test", "excluded") if (ds.table[by] == g).any()]
              if by else ["all"])
    parts = {g: (ds.table[ds.table[by] == g] if by else ds.table) for g in groups}
    rows = [["images", *[len(parts[g]) for g in groups]],
            ["patients", *[parts[g]["patient_id"].nunique() for g in groups]]]
    for o in L.OBSERVATIONS:
        if ds.table[o].isna().all():
            continue  # this source does not label o
        cells = []
        for g in groups:
            col = parts[g][o]
            unc = int((col == L.UNCERTAIN).sum())
            cells.append(f"{int((col == L.POSITIVE).sum())}" + (f" (+{unc} unc.)" if unc else ""))
        rows.append([o, *cells])
    for extra in ds.extra_labels:
        col = ds.table[extra]
        numeric = col.map(lambda v: isinstance(v, (int, float))).all()
        if not numeric and col.nunique() > 10:
            continue  # free text (e.g. IU MeSH terms): not a countable label
        cells = [str(int(parts[g][extra].astype(float).sum())) if numeric else
                 ", ".join(f"{k} {v}" for k, v in parts[g][extra].value_counts().sort_index().items())
                 for g in groups]
        rows.append([f"{extra} (not CheXpert)", *cells])
    console.print(table(f"positives per label ({ds.name}; blank-only observations omitted)",
                        ["label", *groups], rows))
    if absent:
        raise DataError(missing_message(ds, absent))


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
