"""Adapters for a user's own data: a CSV manifest (one row per image, optional labels and
reports) and a plain folder of images without labels."""

from __future__ import annotations

import re
from pathlib import Path

from cxraug.core.errors import DataError
from cxraug.data import labels as L
from cxraug.data.datasets import CXRDataset
from cxraug.data.tables import (
    IMAGE_SUFFIXES,
    chexpert_value,
    finish_dataset,
    layouts_hint,
    read_csv,
)

# ---------------------------------------------------------------------------------- manifest

MANIFEST_NAMES = ("manifest.csv", "labels.csv")


def manifest(root: Path, frontal: bool = True, resolution: int | None = None) -> CXRDataset:
    """A generic CSV manifest, for a hospital's own data.

    ``root`` is the CSV file or a folder holding ``manifest.csv``. Columns: ``path`` (required;
    relative to the CSV's folder or absolute; PNG/JPEG/DICOM), optional ``id``, ``patient_id``
    (default: the image id, i.e. one patient per image), ``view``, ``report``, ``split``, and any
    of the 14 observations as columns (case-insensitive names, aliases like ``effusion``) coded
    1 / 0 / -1 / blank. Other columns are kept as extras.
    """
    csv = root if root.is_file() else next((root / n for n in MANIFEST_NAMES if (root / n).is_file()),
                                           root / MANIFEST_NAMES[0])
    df = read_csv(csv, ("path",), "manifest (one row per image)", layouts_hint())
    base = csv.parent
    label_cols, extras = manifest_columns(csv, df.columns)
    rows = []
    for i, r in df.iterrows():
        path = Path(r["path"])
        absolute = path.is_absolute()  # documented: absolute paths are the user's own choice
        path = path if absolute else base / path
        vec = L.empty_vector()
        for c, obs in label_cols.items():
            vec[L.index(obs)] = chexpert_value(r[c], f"{csv}: row {i + 2}, column {c}")
        ident = r.get("id") or r["path"]
        rows.append({"id": ident, "path": str(path), "absolute": absolute,
                     "patient_id": r.get("patient_id") or ident,
                     "view": r.get("view") or "UNKNOWN", "split": r.get("split", ""),
                     "report": r.get("report") or None, "labels": vec,
                     "extras": {c: r[c] for c in extras}})
    return finish_dataset("manifest", rows, "manifest", base, [], frontal, extras, csv)


MANIFEST_BASE = ("path", "id", "patient_id", "view", "report", "split")


def manifest_columns(csv: Path | str, columns) -> tuple[dict[str, str], list[str]]:
    """Sort a manifest's columns into label columns (column -> observation) and extras.

    Raises naming the columns for a near-miss of a base column (``Patient ID`` for
    ``patient_id``: it would silently become an extra), a likely misspelt label (``Pneumonai``)
    and two columns that give the same label (``Pneumonia`` and ``pneumonia``, ``effusion`` and
    ``Pleural Effusion``).
    """
    label_cols: dict[str, str] = {}
    extras: list[str] = []
    keys = {re.sub(r"[^a-z0-9]+", "", b): b for b in MANIFEST_BASE}
    for c in map(str, columns):
        if c in MANIFEST_BASE:
            continue
        base = keys.get(re.sub(r"[^a-z0-9]+", "", c.lower()))
        if base is not None:
            raise DataError(f"{csv}: column {c!r} is read as an extra column, not as {base!r}; "
                            f"rename it to {base} (manifest column names are exact)")
        try:
            obs = L.canonical(c)
        except L.UnknownLabelError:
            near = L.closest(c)
            if near is not None:
                raise DataError(f"{csv}: column {c!r} looks like a misspelt label {near!r}; "
                                f"rename it to {near!r}, or to a name not close to a label to "
                                "keep it as an extra column") from None
            extras.append(c)
            continue
        same = [k for k, v in label_cols.items() if v == obs]
        if same:
            raise DataError(f"{csv}: columns {same[0]!r} and {c!r} both give the label {obs!r}; "
                            "keep one of them")
        label_cols[c] = obs
    return label_cols, extras


def folder(root: Path, frontal: bool = True, resolution: int | None = None) -> CXRDataset:
    """A folder of images with no labels (e.g. a synthetic cohort or real images for FID).
    Every image file below ``root`` (PNG/JPEG/DICOM), one patient per image."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    rows = [{"id": str(p.relative_to(root)), "path": str(p), "patient_id": str(p.relative_to(root))}
            for p in files]
    if not rows:
        raise DataError(f"{root}: no image files (png/jpg/dcm) found")
    return finish_dataset("folder", rows, "folder", root, [], False)
