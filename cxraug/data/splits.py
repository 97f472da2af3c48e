"""Patient-level splits and nested, label-stratified real-data subsets.

* :func:`assign_splits` gives every image ``train`` / ``val`` / ``test`` such that no patient has
  images in two splits. An official test split is kept when the source has one; patients of the
  official training split who also appear in the official test split are handled by the
  ``overlap`` policy (``drop``: their training images are removed, the default; ``keep``).
* :func:`subset_rank` orders training patients inside label strata once; the subset at fraction
  ``f`` is every patient whose within-stratum quantile is below ``f``. Subsets are therefore
  deterministic from the seed, stratified, patient-level and nested (1% inside 5% inside ...).
* Splits are written to a CSV (``id, patient_id, split``) and reused when it matches the dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxraug.core.errors import DataError
from cxraug.core.seeds import named_rng
from cxraug.data import labels as L
from cxraug.data.datasets import CXRDataset
from cxraug.data.tables import read_csv

SPLITS = ("train", "val", "test")
EXCLUDED = "excluded"  # images a split policy removed (kept in the table and split file, used nowhere)


def patient_strata(ds: CXRDataset, min_size: int = 4) -> pd.Series:
    """One stratum key per patient: the set of observations positive in any of their images.

    Rare combinations (fewer than ``min_size`` patients) are pooled into ``"other"`` so that every
    stratum can be split.
    """
    y = ds.labels == L.POSITIVE
    per_image = ["|".join(o for o, p in zip(L.OBSERVATIONS, row) if p) or "none" for row in y]
    df = pd.DataFrame({"patient": ds.patient_ids, "key": per_image})
    keys = df.groupby("patient")["key"].agg(lambda ks: "|".join(sorted(set("|".join(ks).split("|")))))
    counts = keys.value_counts()
    return keys.where(keys.map(counts) >= min_size, "other")


def _split_patients(patients: pd.Series, fractions: dict[str, float], rng: np.random.Generator) -> dict[str, str]:
    """Stratified assignment of patients (index) with strata (values) to named fractions."""
    out = {}
    for _, group in patients.groupby(patients, sort=True):
        ids = np.array(sorted(group.index))
        rng.shuffle(ids)
        edges = np.cumsum([0.0, *fractions.values()]) * len(ids)
        bounds = np.round(edges).astype(int)
        for name, lo, hi in zip(fractions, bounds[:-1], bounds[1:]):
            out.update({pid: name for pid in ids[lo:hi]})
    return out


def assign_splits(ds: CXRDataset, val_frac: float = 0.1, test_frac: float = 0.2, seed: int = 0,
                  overlap: str = "drop") -> CXRDataset:
    """Return ``ds`` with an ``assigned_split`` column (patient-level, label-stratified).

    If the source has an official test split (``split`` column), it is kept as test and ``val``
    is carved from the official training patients; otherwise train/val/test are drawn with
    ``val_frac`` and ``test_frac``.
    """
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise DataError(f"split fractions val={val_frac}, test={test_frac}: each in [0, 1) with sum < 1")
    if overlap not in ("drop", "keep"):
        raise DataError(f"split.overlap must be 'drop' or 'keep', got {overlap!r}")
    strata = patient_strata(ds)
    official = ds.table["split"].astype(str).str.strip().str.lower().replace(
        {"valid": "val", "validate": "val", "validation": "val", "training": "train",
         "testing": "test"})
    unknown = ~official.isin(["", *SPLITS])
    if unknown.any():  # never count an unknown value (a typo like "tset") as training
        value = ds.table["split"][unknown].iloc[0]
        raise DataError(f"{ds.name}: official split value {value!r} in "
                        f"{int((ds.table['split'] == value).sum())} image(s); allowed: "
                        f"{', '.join(SPLITS)} or blank")
    table = ds.table.copy()
    rng = named_rng(seed, "splits")
    filters = list(ds.filters)
    if (official == "test").any():
        test_patients = set(table.loc[official == "test", "patient_id"])
        train_mask = official != "test"
        crossing = train_mask & table["patient_id"].isin(test_patients)
        if crossing.any() and overlap == "drop":
            filters.append(f"{int(crossing.sum())} training images of {table.loc[crossing, 'patient_id'].nunique()} "
                           "patients who also appear in the official test split dropped")
            official = official.where(~crossing, EXCLUDED)
            train_mask = ~official.isin(["test", EXCLUDED])
        train_patients = strata[strata.index.isin(table.loc[train_mask, "patient_id"])]
        official_val = set(table.loc[official == "val", "patient_id"])
        if official_val:
            assign = {p: ("val" if p in official_val else "train") for p in train_patients.index}
        else:
            frac = val_frac / (1 - test_frac) if test_frac < 1 else val_frac
            assign = _split_patients(train_patients, {"train": 1 - frac, "val": frac}, rng)
        split = np.where(official == "test", "test", table["patient_id"].map(assign).fillna(EXCLUDED))
        split = np.where(official == EXCLUDED, EXCLUDED, split)
        if overlap == "keep":
            # a patient in both official splits stays in test everywhere: splits stay disjoint
            split = np.where(table["patient_id"].isin(test_patients), "test", split)
    else:
        assign = _split_patients(strata, {"train": 1 - val_frac - test_frac, "val": val_frac,
                                          "test": test_frac}, rng)
        split = table["patient_id"].map(assign).to_numpy()
    table["assigned_split"] = split
    out = CXRDataset(name=ds.name, table=table, root=ds.root, filters=filters,
                     extra_labels=list(ds.extra_labels))
    check_disjoint(out)
    return out


def check_disjoint(ds: CXRDataset) -> None:
    """Raise if any patient has images in more than one split."""
    used = ds.table[ds.table["assigned_split"] != EXCLUDED]
    n = used.groupby("patient_id")["assigned_split"].nunique()
    if (n > 1).any():
        raise DataError(f"{ds.name}: patient {n[n > 1].index[0]!r} appears in more than one split")


def save_splits(ds: CXRDataset, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    ds.table[["id", "patient_id", "assigned_split"]].rename(columns={"assigned_split": "split"}).to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def load_splits(ds: CXRDataset, path: str | Path) -> CXRDataset:
    """Apply a saved split file; every image of ``ds`` must be listed with its patient."""
    path = Path(path)
    df = read_csv(path, ("id", "patient_id", "split"), "split file")
    bad = set(df["split"]) - set(SPLITS) - {EXCLUDED}
    if bad:
        raise DataError(f"{path}: column split has {sorted(bad)[0]!r}; expected train, val or test")
    mapping = dict(zip(df["id"], df["split"]))
    missing = [i for i in ds.ids if i not in mapping]
    if missing:
        raise DataError(f"{path}: does not list image {missing[0]!r} ({len(missing)} missing); "
                        "it was made for other data - delete it to make new splits")
    table = ds.table.copy()
    table["assigned_split"] = table["id"].map(mapping)
    out = CXRDataset(name=ds.name, table=table, root=ds.root, filters=list(ds.filters),
                     extra_labels=list(ds.extra_labels))
    check_disjoint(out)
    return out


def splits_for(ds: CXRDataset, path: str | Path, **kwargs) -> CXRDataset:
    """Reuse the split file at ``path`` if it fits ``ds``; otherwise make one and write it."""
    path = Path(path)
    if path.is_file():
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "id" in df.columns and set(df["id"]) >= set(ds.ids):
            return load_splits(ds, path)
        raise DataError(f"{path}: split file does not match this dataset; delete it or pass another")
    out = assign_splits(ds, **kwargs)
    save_splits(out, path)
    return out


# ----------------------------------------------------------------------------------- subsets

def subset_rank(train: CXRDataset, seed: int = 0) -> pd.Series:
    """Each training patient's quantile in [0, 1) inside its label stratum (seeded, fixed)."""
    strata = patient_strata(train)
    rng = named_rng(seed, "subsets")
    q = {}
    for _, group in strata.groupby(strata, sort=True):
        ids = np.array(sorted(group.index))
        rng.shuffle(ids)
        q.update({pid: (k + 0.5) / len(ids) for k, pid in enumerate(ids)})
    return pd.Series(q)


def real_subset(train: CXRDataset, frac: float, seed: int = 0) -> CXRDataset:
    """The patient-level, label-stratified, nested subset holding ``frac`` of the patients.

    At least one patient per stratum present in the training set is never guaranteed; at tiny
    fractions the smallest strata can be empty, exactly as a random draw of that size would be.
    """
    if not 0 < frac <= 1:
        raise DataError(f"real fraction {frac}: must be in (0, 1], e.g. 0.01 for 1%")
    q = subset_rank(train, seed)
    keep = train.table["patient_id"].map(q).to_numpy() < frac
    if not keep.any():  # a fraction below one patient still yields one patient
        keep = train.table["patient_id"].to_numpy() == q.idxmin()
    return train.select(keep, f"{train.name}:{frac:g}")
