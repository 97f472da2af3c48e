"""Dataset adapters: each public layout -> :class:`~cxraug.data.datasets.CXRDataset`.

Every adapter takes the dataset's root folder (as the user downloaded it) and returns the one
schema. Filters are stated in each docstring and recorded in ``dataset.filters``:

* ``frontal`` (default on): keep PA/AP views; images without view information are kept.
* No adapter keeps one image per patient, and none filters by age, sex or label.

Label tables follow each source's own semantics, mapped through :mod:`cxraug.data.labels`:
NIH and Kermany labels are complete for the findings they cover (absent = negative), CheXpert and
MIMIC tables keep their 1 / 0 / -1 / blank coding.

This module holds the registry (:data:`ADAPTERS`), layout detection and loading; the adapters
are in :mod:`cxraug.data.layouts` (public datasets) and :mod:`cxraug.data.manifest` (a CSV
manifest or a folder of your own images), their shared table helpers in :mod:`cxraug.data.tables`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from cxraug.core.errors import DataError
from cxraug.data.datasets import CXRDataset
from cxraug.data.layouts import chexpert, iu, kermany, mimic, nih14
from cxraug.data.manifest import MANIFEST_NAMES, folder, manifest
from cxraug.data.tables import IMAGE_SUFFIXES, columns_text, layouts_hint

ADAPTERS: dict[str, Callable[..., CXRDataset]] = {
    "kermany": kermany,
    "nih14": nih14,
    "chexpert": chexpert,
    "mimic": mimic,
    "manifest": manifest,
    "folder": folder,
    "iu": iu,
}


def _header(path: Path) -> list[str]:
    try:
        return [str(c) for c in pd.read_csv(path, dtype=str, nrows=0).columns]
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None


def detect(root: Path) -> str:
    """Guess the adapter for a folder from the files in it.

    An ``index.csv`` must match a known layout by its columns; one that matches none is an error
    listing the columns found and those each layout needs, never read as an unlabelled folder.
    """
    if root.is_file():
        return "manifest"
    index = root / "index.csv"
    if index.is_file():
        cols = _header(index)
        if {"image_path", "split", "patient_id", "pneumonia"} <= set(cols):
            return "kermany"
        if ({"image_id", "patient_id", "finding_labels"} <= set(cols)
                and any(c.startswith("image_path_") for c in cols)):
            return "nih14"
        raise DataError(f"{index}: its columns match no known layout (found: {columns_text(cols)})"
                        + layouts_hint())
    if any(root.glob("Data_Entry_2017*")):
        return "nih14"
    if (root / "train.csv").is_file() or (root / "valid.csv").is_file():
        return "chexpert"
    if any(root.glob("mimic-cxr-2.0.0-metadata.csv*")):
        return "mimic"
    if any((root / n).is_file() for n in MANIFEST_NAMES):
        return "manifest"
    if any((root / s / c).is_dir() for s in ("train", "test") for c in ("NORMAL", "PNEUMONIA")):
        return "kermany"
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.rglob("*")):
        return "folder"
    raise DataError(f"{root}: cannot tell which dataset this is; pass --dataset "
                    f"({', '.join(ADAPTERS)})")


MISSING_POLICIES = ("error", "keep")


def load_dataset(data: str | Path, kind: str = "auto", frontal: bool = True,
                 resolution: int | None = None, missing: str = "error") -> CXRDataset:
    """Load a dataset folder (or manifest CSV) with the named adapter, or detect it.

    Image files the table lists but that do not exist raise a :class:`DataError` naming the
    first few and their count (``missing="error"``); ``missing="keep"`` keeps their rows, for
    callers that report them (``cxraug data info``) or skip unreadable images later
    (``--skip-bad``; the image cache lists what it skipped).
    """
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing={missing!r}: expected one of {MISSING_POLICIES}")
    root = Path(data).expanduser()
    if not root.exists():
        raise DataError(f"{root}: data path not found")
    kind = detect(root) if kind == "auto" else kind
    if kind not in ADAPTERS:
        raise DataError(f"unknown dataset kind {kind!r}; choose one of auto, {', '.join(ADAPTERS)}")
    ds = ADAPTERS[kind](root.resolve(), frontal=frontal, resolution=resolution)
    if len(ds) == 0:
        raise DataError(f"{root}: the {kind} adapter found no images (after filters: {ds.filters})")
    if missing == "error":
        absent = missing_files(ds)
        if absent:
            raise DataError(missing_message(ds, absent)
                            + " (--skip-bad, where a command has it, leaves them out)")
    return ds


def missing_files(ds: CXRDataset) -> list[str]:
    """Every image path of ``ds`` that is not an existing file (rows without a path, e.g. IU
    reports without images, are not counted)."""
    return [p for p in ds.table["path"].astype(str) if p and not os.path.isfile(p)]


def missing_message(ds: CXRDataset, absent: list[str], show: int = 3) -> str:
    """One line: how many listed image files do not exist, the first few, and the fix."""
    def short(p: str) -> str:
        try:
            return str(Path(p).relative_to(ds.root)) if ds.root is not None else p
        except ValueError:
            return p

    names = ", ".join(short(p) for p in absent[:show])
    more = f" and {len(absent) - show} more" if len(absent) > show else ""
    return (f"{ds.root}: {len(absent)} of {len(ds)} image files listed by the {ds.name} table do "
            f"not exist: {names}{more}; fix the paths or remove those rows")


# ------------------------------------------------------------------------- embedded sample

SAMPLES = ("kermany", "nih14")


def sample_root(name: str = "kermany") -> Path:
    """Folder of the small real sample shipped with cxraug (see its NOTICE.txt for licences)."""
    from importlib.resources import files

    if name not in SAMPLES:
        raise DataError(f"unknown embedded sample {name!r}; choose one of {', '.join(SAMPLES)}")
    return Path(str(files("cxraug") / "assets" / "sample" / name))


def resolve_data(data: str | Path | None) -> Path:
    """A ``--data`` argument: a path, ``sample:<name>``, or nothing (the Kermany sample)."""
    if data is None or str(data) == "":
        return sample_root("kermany")
    text = str(data)
    if text.startswith("sample:"):
        return sample_root(text.split(":", 1)[1])
    return Path(text)
