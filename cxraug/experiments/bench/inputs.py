"""The bench's inputs besides the real splits: a synthetic cohort, the real subsets' size
warnings and the external test sets (``--test-data``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxraug.classify.data import ArraySet
from cxraug.classify.real import RealData
from cxraug.cohorts.store import read_manifest
from cxraug.core.errors import CxraugError, DataError
from cxraug.data import labels as L
from cxraug.data.adapters import load_dataset, resolve_data
from cxraug.data.cache import cached_images
from cxraug.data.splits import real_subset
from cxraug.data.transforms import load_grayscale, resize_square
from cxraug.experiments.bench.config import BenchConfig


def load_cohort(folder: Path, labels: list[str], image_size: int, policy: str) -> tuple[ArraySet, dict]:
    """A synthetic cohort from ``cxraug synth`` (accepted images only) as an ArraySet."""
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise DataError(f"{folder}: no manifest.csv; pass a cohort folder written by cxraug synth")
    df = read_manifest(manifest, ("file", *labels))
    if "accepted" in df.columns:
        df = df[df["accepted"]]
    if df.empty:
        raise DataError(f"{manifest}: no accepted images")
    imgs = np.stack([resize_square(load_grayscale(folder / f), image_size) for f in df["file"]])
    raw = np.full((len(df), L.N_OBS), np.nan, np.float32)
    for o in labels:
        raw[:, L.index(o)] = df[o].to_numpy(dtype=np.float32)
    targets = L.apply_policy(raw, policy)[:, [L.index(o) for o in labels]]
    card = json.loads((folder / "cohort.json").read_text()) if (folder / "cohort.json").is_file() else {}
    return ArraySet(imgs, targets, np.array([f"synthetic-{i}" for i in range(len(df))])), card


#: Fewer real training images than this per class (positives or negatives of a label) make a
#: subset's test mAUC mostly noise; bench warns and records it.
MIN_PER_CLASS = 10


def subset_warnings(cfg: BenchConfig, real: RealData) -> list[str]:
    """One line per real fraction whose subset (in its sparsest draw) has fewer than
    ``MIN_PER_CLASS`` positive or negative images for some label."""
    out = []
    for frac in cfg.real_fracs:
        worst = None
        for draw in range(cfg.subsets):
            sub = real_subset(real.train, frac, seed=cfg.subset_seed + draw)
            y = L.apply_policy(sub.labels, cfg.policy)[:, [L.index(x) for x in real.labels]]
            for j, name in enumerate(real.labels):
                pos, neg = int((y[:, j] == 1).sum()), int((y[:, j] == 0).sum())
                if min(pos, neg) < MIN_PER_CLASS and (worst is None or min(pos, neg) < worst[0]):
                    worst = (min(pos, neg), len(sub), pos, name, neg)
        if worst is not None:
            _, n, pos, name, neg = worst
            out.append(f"real fraction {frac:g}: {n} training images, {pos} {name} positive "
                       f"and {neg} negative (< {MIN_PER_CLASS} per class): its numbers are "
                       "mostly noise; use a larger dataset (--data) or fraction")
    return out


@dataclass
class TestSet:
    """An external test set: every image of another dataset, targets in the bench's label
    ``columns`` (NaN where unlabelled); ``labels`` are those it has both classes of."""

    name: str
    source: str
    data: ArraySet
    ids: np.ndarray
    columns: list[str]
    labels: list[str]
    skipped: dict[str, str]

    def card(self) -> dict:
        y = self.data.targets
        return {"data": self.source, "n_images": len(self.data),
                "n_patients": int(len(set(self.data.patient_ids))), "labels": self.labels,
                "skipped": self.skipped,
                "positives": {o: int((y[:, j] == 1).sum()) for j, o in enumerate(self.columns)
                              if o in self.labels}}


def test_set_names(specs: list[str]) -> list[str]:
    """A short, file-safe, distinct name per ``--test-data`` value (``sample:nih14`` -> nih14)."""
    names: list[str] = []
    for spec in specs:
        base = re.sub(r"[^\w.-]+", "_", Path(str(spec).split(":", 1)[-1].rstrip("/")).name) or "test"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def load_test_set(spec: str, name: str, cfg: BenchConfig, labels: list[str]) -> TestSet:
    """All images of dataset ``spec`` with targets for ``labels``; labels without both classes
    there are skipped (with the reason) rather than scored."""
    root = resolve_data(spec)
    if Path(root).resolve() == Path(resolve_data(cfg.data)).resolve():
        raise CxraugError(f"--test-data {spec}: is the bench's own --data (its test split is "
                          "already scored); pass another dataset")
    images, ds, _ = cached_images(load_dataset(root), cfg.image_size, progress=False)
    y = L.apply_policy(ds.labels, cfg.policy)[:, [L.index(x) for x in labels]]
    evaluated, skipped = [], {}
    for j, label in enumerate(labels):
        pos, neg = int((y[:, j] == 1).sum()), int((y[:, j] == 0).sum())
        if pos and neg:
            evaluated.append(label)
        else:
            skipped[label] = "not labelled there" if not pos + neg else \
                f"{pos} positive and {neg} negative images there (needs both)"
    if not evaluated:
        raise DataError(f"--test-data {spec}: none of the bench labels ({', '.join(labels)}) has "
                        "both positive and negative images there; nothing to score")
    data = ArraySet(images, y, ds.patient_ids)  # the cache memmap: read one batch at a time
    return TestSet(name, str(spec), data, np.asarray(ds.ids, dtype=str), list(labels), evaluated,
                   skipped)


def load_test_sets(specs: list[str] | None, cfg: BenchConfig, labels: list[str]) -> list[TestSet]:
    specs = list(specs or [])
    return [load_test_set(s, n, cfg, labels) for s, n in zip(specs, test_set_names(specs))]
