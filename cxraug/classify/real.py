"""The real data a classifier learns from and is scored on: patient-level splits (reused from a
``splits.csv``), cached images and policy-applied targets for the chosen labels. Shared by
``cxraug train classifier`` and the limited-data bench (:mod:`cxraug.experiments.bench`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxraug.classify.data import ArraySet, RealDataConfig
from cxraug.core.errors import DataError
from cxraug.data import labels as L
from cxraug.data.adapters import load_dataset, resolve_data
from cxraug.data.cache import cached_images
from cxraug.data.splits import splits_for


@dataclass
class RealData:
    """The real splits a classifier uses: the training split (a dataset, for its subsets), the
    validation and test splits as arrays, the training images and the label columns."""

    train: Any  # CXRDataset of the training split
    val: ArraySet
    test: ArraySet
    train_images: np.ndarray
    labels: list[str]
    held_out_ids: dict[str, np.ndarray] = field(default_factory=dict)  # "val"/"test" -> image ids


def load_real_splits(cfg: RealDataConfig, splits_path: Path, image_size: int,
                     split_seed: int = 0) -> RealData:
    """Splits (reused from ``splits_path``, else made with ``split_seed``), images cached at
    ``image_size`` and targets for the chosen labels of the real data ``cfg``."""
    ds = splits_for(load_dataset(resolve_data(cfg.data), cfg.dataset), splits_path, seed=split_seed)
    ds = ds.select(ds.table["assigned_split"].to_numpy() != "excluded")
    images, ds, _ = cached_images(ds, image_size)
    split = ds.table["assigned_split"].to_numpy()
    if cfg.labels:
        labels = [L.canonical(x) for x in cfg.labels]
    else:
        y = ds.labels
        labels = [o for i, o in enumerate(L.OBSERVATIONS) if o != "No Finding"
                  and all(((y[split == s, i] == 1).sum() >= cfg.min_positive) for s in ("train", "test"))]
        if not labels:
            raise DataError(f"{cfg.data}: no observation has {cfg.min_positive} positives in both train "
                            "and test; pass --labels or lower --min-positive")
    cols = [L.index(x) for x in labels]
    targets = L.apply_policy(ds.labels, cfg.policy)[:, cols]

    def arr(name: str) -> ArraySet:
        m = split == name
        return ArraySet(np.asarray(images[m]), targets[m], ds.patient_ids[m])

    train_ds = ds.where_split("train")
    ids = np.asarray(ds.ids, dtype=str)
    return RealData(train_ds, arr("val"), arr("test"), np.asarray(images[split == "train"]), labels,
                    {s: ids[split == s] for s in ("val", "test")})
