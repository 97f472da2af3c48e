"""One sample schema for every chest X-ray dataset, and the adapters that produce it.

A :class:`CXRDataset` is a table with one row per image:

=============  ==============================================================================
``id``         unique image id (string)
``path``       image file, absolute
``report``     report text or ``None`` (datasets with labels only: Kermany, NIH)
``patient_id`` patient identifier (string); splits and subsets are made per patient
``view``       ``PA`` / ``AP`` / ``LATERAL`` / ``UNKNOWN``
``source``     adapter name (``kermany``, ``nih14``, ``chexpert``, ``mimic``, ``iu``, ``manifest``)
``split``      official split if the source has one (``train``/``test``), else empty
14 columns     the raw CheXpert observations (1 / 0 / -1 / NaN), see :mod:`cxraug.data.labels`
extras         source labels without a CheXpert counterpart (NIH Emphysema, Kermany subtype ...)
=============  ==============================================================================

Adapters live in :mod:`cxraug.data.adapters`; each documents the filters it applies (frontal
views only by default; no adapter silently keeps one image per patient).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxraug.core.errors import DataError
from cxraug.data import labels as L
from cxraug.data.transforms import load_grayscale

BASE_COLUMNS = ("id", "path", "report", "patient_id", "view", "source", "split")
FRONTAL_VIEWS = ("PA", "AP")


@dataclasses.dataclass
class Sample:
    """One image and what is known about it (``image``: ``uint8 [H, W]``)."""

    id: str
    image: np.ndarray
    labels: np.ndarray  # raw float32 [14]
    patient_id: str
    view: str
    source: str
    report: str | None = None


@dataclasses.dataclass
class CXRDataset:
    """A chest X-ray dataset in cxraug's schema (see the module docstring).

    ``filters`` lists, in words, every filter the adapter applied, so ``cxraug data info`` and
    the run cards can say exactly which images were used.
    """

    name: str
    table: pd.DataFrame
    root: Path | None = None
    filters: list[str] = dataclasses.field(default_factory=list)
    extra_labels: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        missing = [c for c in (*BASE_COLUMNS, *L.OBSERVATIONS) if c not in self.table.columns]
        if missing:
            raise DataError(f"{self.name}: dataset table lacks columns {missing}")
        self.table = self.table.reset_index(drop=True)
        if self.table["id"].duplicated().any():
            dup = self.table.loc[self.table["id"].duplicated(), "id"].iloc[0]
            raise DataError(f"{self.name}: image id {dup!r} occurs more than once")

    def __len__(self) -> int:
        return len(self.table)

    # -- columns as arrays
    @property
    def labels(self) -> np.ndarray:
        """Raw labels ``float32 [N, 14]`` in CheXbert order (1 / 0 / -1 / NaN)."""
        return self.table[list(L.OBSERVATIONS)].to_numpy(dtype=np.float32)

    @property
    def patient_ids(self) -> np.ndarray:
        return self.table["patient_id"].astype(str).to_numpy()

    @property
    def ids(self) -> list[str]:
        return self.table["id"].astype(str).tolist()

    @property
    def paths(self) -> list[Path]:
        return [Path(p) for p in self.table["path"]]

    @property
    def reports(self) -> list[str | None]:
        return [None if (r is None or (isinstance(r, float) and np.isnan(r))) else str(r)
                for r in self.table["report"]]

    def has_reports(self) -> bool:
        return any(r is not None for r in self.reports)

    def labelled(self, min_positive: int = 1) -> list[str]:
        """Observations with at least ``min_positive`` positives and one negative."""
        y = self.labels
        return [o for i, o in enumerate(L.OBSERVATIONS)
                if (y[:, i] == L.POSITIVE).sum() >= min_positive and (y[:, i] == L.NEGATIVE).any()]

    # -- access
    def sample(self, i: int) -> Sample:
        row = self.table.iloc[i]
        return Sample(id=str(row["id"]), image=load_grayscale(row["path"]),
                      labels=row[list(L.OBSERVATIONS)].to_numpy(dtype=np.float32),
                      patient_id=str(row["patient_id"]), view=str(row["view"]),
                      source=str(row["source"]), report=self.reports[i])

    def select(self, rows: Sequence[int] | np.ndarray, name: str | None = None) -> CXRDataset:
        """A new dataset with the given rows (indices or boolean mask), same filters/extras."""
        rows = np.asarray(rows)
        table = self.table[rows] if rows.dtype == bool else self.table.iloc[rows]
        return dataclasses.replace(self, name=name or self.name, table=table.copy(),
                                   filters=list(self.filters))

    def where_split(self, split: str) -> CXRDataset:
        if "assigned_split" not in self.table:
            raise DataError(f"{self.name}: no splits assigned; call cxraug.data.splits.assign_splits")
        return self.select(self.table["assigned_split"].to_numpy() == split, f"{self.name}:{split}")

    def check_files(self, limit: int = 5) -> list[str]:
        """Paths that do not exist (at most ``limit``)."""
        missing = []
        for p in self.table["path"]:
            if not Path(p).is_file():
                missing.append(str(p))
                if len(missing) >= limit:
                    break
        return missing

    # -- summaries
    def counts(self, by: str | None = None) -> pd.DataFrame:
        """Positive / negative / uncertain counts per observation (and per ``by`` column)."""
        groups = [("all", self.table)] if by is None else list(self.table.groupby(by, sort=True))
        rows = []
        for key, part in groups:
            y = part[list(L.OBSERVATIONS)].to_numpy(dtype=np.float32)
            for i, o in enumerate(L.OBSERVATIONS):
                rows.append({"group": key, "label": o, "positive": int((y[:, i] == 1).sum()),
                             "negative": int((y[:, i] == 0).sum()),
                             "uncertain": int((y[:, i] == -1).sum()),
                             "missing": int(np.isnan(y[:, i]).sum())})
        return pd.DataFrame(rows)


def make_table(rows: list[dict], source: str) -> pd.DataFrame:
    """Assemble a schema table from dicts with base fields and a ``labels`` 14-vector."""
    records = []
    for r in rows:
        rec = {c: r.get(c) for c in BASE_COLUMNS}
        rec["source"] = source
        rec["split"] = r.get("split") or ""
        rec["view"] = (r.get("view") or "UNKNOWN").upper()
        vec = r.get("labels")
        vec = L.empty_vector() if vec is None else vec
        rec.update({o: float(v) for o, v in zip(L.OBSERVATIONS, vec)})
        rec.update(r.get("extras") or {})
        records.append(rec)
    table = pd.DataFrame.from_records(records)
    if table.empty:
        table = pd.DataFrame(columns=[*BASE_COLUMNS, *L.OBSERVATIONS])
    for c in ("id", "patient_id", "view", "source", "split"):
        table[c] = table[c].astype(str)
    table["report"] = table["report"].astype(object)
    return table


def frontal_only(ds_table: pd.DataFrame, keep_unknown: bool = True) -> pd.DataFrame:
    views = ds_table["view"].str.upper()
    mask = views.isin(FRONTAL_VIEWS) | (keep_unknown & (views == "UNKNOWN"))
    return ds_table[mask]
