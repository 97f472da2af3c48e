"""What every dataset layout adapter shares: reading its CSV tables with one-line errors naming
the file, checking label cells and split values, and turning its rows into a
:class:`~cxraug.data.datasets.CXRDataset`."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from cxraug.core.errors import DataError
from cxraug.data.datasets import CXRDataset, frontal_only, make_table

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp")


def read_csv(path: Path, required: tuple[str, ...], what: str, hint: str = "",
             dtype=str, keep_default_na: bool = False) -> pd.DataFrame:
    """Read a CSV (optionally .gz) and check its columns, with one-line errors naming the file.

    ``hint`` is appended to the missing-column error (e.g. the layouts cxraug knows). By default
    every cell is text ("" where empty); ``dtype``/``keep_default_na`` are pandas' options for
    tables with numeric columns.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected the {what})")
    try:
        df = pd.read_csv(path, dtype=dtype, keep_default_na=keep_default_na)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    # pandas renames a repeated column "x" to "x.1": two columns of one name are a conflict
    for c in df.columns:
        m = re.fullmatch(r"(.+)\.(\d+)", str(c))
        if m and m.group(1) in df.columns:
            raise DataError(f"{path}: column {m.group(1)!r} appears more than once; keep one")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; the {what} needs "
                        f"{', '.join(required)} (found: {columns_text(df.columns)}){hint}")
    if df.empty:
        raise DataError(f"{path}: has no rows")
    return df


def columns_text(columns, limit: int = 20) -> str:
    cols = [str(c) for c in columns]
    shown = ", ".join(repr(c) if c != c.strip() or not c else c for c in cols[:limit])
    return (shown + (f", ... ({len(cols)} in all)" if len(cols) > limit else "")) or "none"


#: The table layouts cxraug reads, with the columns each needs (shown when a table matches none).
LAYOUT_COLUMNS: dict[str, str] = {
    "kermany": "index.csv with image_path, split, patient_id, pneumonia (optional subtype)",
    "nih14": "index.csv with image_id, image_path_<size>, patient_id, finding_labels, or "
             "Data_Entry_2017*.csv with Image Index, Finding Labels, Patient ID, View Position",
    "chexpert": "train.csv / valid.csv with Path, Frontal/Lateral and the 14 observations",
    "mimic": "mimic-cxr-2.0.0-metadata.csv (dicom_id, subject_id, study_id, ViewPosition) and "
             "mimic-cxr-2.0.0-chexpert.csv",
    "manifest": "manifest.csv or labels.csv (or any CSV given as the data path) with path "
                "(optional id, patient_id, view, report, split, label columns)",
}


def layouts_hint() -> str:
    return ("; known layouts: " + "; ".join(f"{k}: {v}" for k, v in LAYOUT_COLUMNS.items())
            + "; rename the columns, or pass --dataset folder to read only the images, unlabelled")


#: Official split values (case and surrounding spaces ignored): anything else in a split column,
#: ``training`` or ``validation`` included, is an error, never training data.
SPLIT_VALUES = ("", "train", "val", "test")
#: Spellings that mean an official value, named in the error so the fix is obvious.
SPLIT_SPELLINGS = {"training": "train", "valid": "val", "validate": "val", "validation": "val",
                   "testing": "test"}


def _check_splits(table: pd.DataFrame, where: Path | str) -> pd.DataFrame:
    """Official split values to train / val / test / blank; raise naming any other value."""
    raw = table["split"].astype(str)
    norm = raw.str.strip().str.lower()
    bad = ~norm.isin(list(SPLIT_VALUES))
    if bad.any():
        value = raw[bad].iloc[0]
        n = int((raw == value).sum())
        others = raw[bad & (raw != value)].nunique()
        fix = SPLIT_SPELLINGS.get(value.strip().lower())
        raise DataError(f"{where}: split value {value!r} in {n} row(s) (e.g. image "
                        f"{table.loc[raw == value, 'id'].iloc[0]!r})"
                        + (f" and {others} other unknown value(s)" if others else "")
                        + "; allowed: train, val, test or blank for no official split"
                        + (f" (rename {value.strip()!r} to {fix!r})" if fix else ""))
    table = table.copy()
    table["split"] = norm
    return table


def check_inside(rows: list[dict], root: Path, where: Path | str, absolute_ok: bool = False) -> None:
    """Every row's image ``path`` (already joined to ``root``) stays inside ``root``.

    A table row ``../../etc/passwd``, ``/etc/hostname`` or ``../other-dataset/x.png`` would
    otherwise be read as one of this dataset's images. The check is on the path as written
    (``..`` and absolute paths); a symbolic link inside the folder is a deliberate choice of
    whoever made it and is followed. ``absolute_ok``: the layout documents absolute paths (a
    manifest CSV), so only relative ones are checked. Raises naming the row and the file.
    """
    base = os.path.normpath(os.path.abspath(root))
    for i, r in enumerate(rows):
        path = str(r.get("path") or "")
        if not path or (absolute_ok and r.get("absolute")):
            continue
        norm = os.path.normpath(path)
        if norm != base and not norm.startswith(base.rstrip(os.sep) + os.sep):
            raise DataError(f"{where}: row {i + 2} (image {r.get('id')!s}): file {norm} is outside "
                            f"the dataset folder {base}; image paths must be relative to it and "
                            "stay inside it")


def chexpert_value(text: str, where: str) -> float:
    """A CheXpert-coded cell: '1', '1.0', '0', '-1', '' -> float (NaN for blank)."""
    t = str(text).strip()
    if t == "" or t.lower() == "nan":
        return np.nan
    try:
        v = float(t)
    except ValueError:
        raise DataError(f"{where}: label value {t!r} is not 1, 0, -1 or blank") from None
    if v not in (1.0, 0.0, -1.0):
        raise DataError(f"{where}: label value {t!r} is not 1, 0, -1 or blank")
    return v


def finish_dataset(name: str, rows: list[dict], source: str, root: Path, filters: list[str],
            frontal: bool, extras: list[str] | None = None,
            table_file: Path | None = None, inside: Path | None = None) -> CXRDataset:
    """The rows of a layout as a dataset, once their paths (inside ``inside``, default ``root``)
    and split values are checked; ``frontal``: drop lateral views."""
    check_inside(rows, inside or root, table_file or root, absolute_ok=source == "manifest")
    table = make_table(rows, source)
    if table.empty:
        raise DataError(f"{root}: no images found for the {name} layout")
    table = _check_splits(table, table_file or root)
    if frontal:
        before = len(table)
        table = frontal_only(table)
        filters.append(f"frontal views only (PA/AP; {before - len(table)} lateral/other dropped)")
    return CXRDataset(name=name, table=table, root=root, filters=filters, extra_labels=extras or [])
