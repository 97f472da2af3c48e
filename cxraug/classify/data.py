"""The data a classifier learns from: which real data (:class:`RealDataConfig`), and plain
arrays (:class:`ArraySet`) read one batch at a time.

An :class:`ArraySet` holds ``uint8 [N, H, W]`` images (possibly a ``np.memmap``), targets
``float32 [N, L]`` in {0, 1, NaN} and patient ids ``[N]``. Training reads it as ``uint8``
batches of shuffled rows (:class:`BatchReader`, :class:`EpochSampler`); conversion to float and
augmentation happen in torch (:mod:`cxraug.classify.train`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from cxraug.core.errors import DataError


@dataclass
class RealDataConfig:
    """Which real data and labels a classifier learns (``cxraug train classifier``, ``cxraug
    bench``): ``labels`` empty means every observation with at least ``min_positive`` positives in
    both the train and the test split; ``policy`` maps uncertain labels."""

    data: str = "sample:kermany"
    dataset: str = "auto"
    labels: list[str] = field(default_factory=list)
    min_positive: int = 10
    policy: str = "ignore"


@dataclass
class ArraySet:
    """Images with targets and patient ids, row-aligned.

    ``images``: ``uint8 [N, H, W]`` (array or memmap); ``targets``: ``float32 [N, L]`` in
    {0, 1, NaN}; ``patient_ids``: ``str [N]`` (for patient-level bootstrap and leakage checks).
    """

    images: np.ndarray
    targets: np.ndarray
    patient_ids: np.ndarray

    def __post_init__(self) -> None:
        self.targets = np.asarray(self.targets, dtype=np.float32)
        self.patient_ids = np.asarray(self.patient_ids).astype(str)
        n = len(self.images)
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise DataError(f"ArraySet.images: expected uint8 [N, H, W], got {self.images.dtype} "
                            f"{tuple(self.images.shape)}")
        if self.targets.ndim != 2 or len(self.targets) != n or len(self.patient_ids) != n:
            raise DataError(f"ArraySet: {n} images but targets {self.targets.shape} and "
                            f"{len(self.patient_ids)} patient ids")
        ok = np.isnan(self.targets) | np.isin(self.targets, (0.0, 1.0))
        if not ok.all():
            raise DataError(f"ArraySet.targets: values must be 0, 1 or NaN (apply an uncertainty "
                            f"policy first); found {sorted(set(self.targets[~ok].tolist()))[:5]}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def n_labels(self) -> int:
        return self.targets.shape[1]

    def subset(self, rows: Sequence[int] | np.ndarray) -> ArraySet:
        rows = np.asarray(rows, dtype=np.int64)
        return ArraySet(np.asarray(self.images[rows]), self.targets[rows], self.patient_ids[rows])

    @staticmethod
    def concat(*sets: ArraySet) -> ArraySet:
        """Rows of all ``sets`` in order (images are read into memory)."""
        if len({s.images.shape[1:] for s in sets}) != 1 or len({s.n_labels for s in sets}) != 1:
            raise DataError("ArraySet.concat: sets differ in image size or label count: "
                            + ", ".join(f"{s.images.shape[1:]}/{s.n_labels}" for s in sets))
        return ArraySet(np.concatenate([np.asarray(s.images) for s in sets]),
                        np.concatenate([s.targets for s in sets]),
                        np.concatenate([s.patient_ids for s in sets]))

    def repeat(self, total: int, seed: int = 0) -> ArraySet:
        """Exactly ``total`` rows: whole copies of this set, then a seeded random remainder.

        This is the ``real+dup`` control: the real subset duplicated to the size of a
        real+synthetic arm, so that more rows per epoch alone cannot explain a gain.
        """
        n = len(self)
        if n == 0 or total < 1:
            raise DataError(f"ArraySet.repeat: cannot make {total} rows from {n}")
        copies, rest = divmod(total, n)
        extra = np.sort(np.random.default_rng(seed).permutation(n)[:rest])
        return self.subset(np.concatenate([np.tile(np.arange(n), copies), extra]))


class BatchReader(Dataset):
    """``reader[rows]`` -> ``(uint8 [b, H, W], float32 [b, L])``; one item is one batch."""

    def __init__(self, data: ArraySet, in_memory: bool) -> None:
        # in_memory reads everything once (a memmap becomes RAM) to measure loading overhead.
        self.images = torch.from_numpy(np.array(data.images, copy=True)) if in_memory else data.images
        self.targets = torch.from_numpy(data.targets)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.sort(rows)  # ascending reads are much faster on a memmap; order is irrelevant
        if torch.is_tensor(self.images):
            images = self.images[torch.from_numpy(rows)]
        else:
            images = torch.from_numpy(np.asarray(self.images[rows]))
        return images, self.targets[torch.from_numpy(rows)]


class EpochSampler:
    """Yields one shuffled epoch of row batches per iteration, from a seeded generator."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.generator = n, min(batch_size, n), generator

    def __len__(self) -> int:
        return self.n // self.batch_size  # drop the ragged last batch (BatchNorm needs > 1 row)

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).numpy()
        for i in range(len(self)):
            yield order[i * self.batch_size:(i + 1) * self.batch_size]
