"""A generator's real-data reference, shipped with a packaged model instead of the data itself.

``cxraug synth`` needs three things from the real data a generator was trained on: the training
labels (to plan label co-occurrence as in the data), the training images (the memorisation gate
looks for near-copies of them) and the val split (to calibrate the gates). A run folder finds them
through its recipe's dataset; a packaged model (``cxraug export``) carries them in
``reference.npz``:

=================  ========================================================================
``train_ids``      training image ids ``[N]``
``train_labels``   raw labels ``float32 [N, 14]`` (1 / 0 / -1 / NaN, CheXbert order)
``train_images``   ``uint8 [N, s, s]`` area-downsampled copies (``s`` = ``reference_size``)
``val_ids``        val image ids ``[V]`` (same patients never in train)
``val_labels``     ``float32 [V, 14]``
``val_images``     ``uint8 [V, S, S]`` at the generator's own image size (fidelity calibration)
=================  ========================================================================

The memorisation gate compares generated images with the training images at ``s`` px (it
downsamples the generated ones), and calibrates on the val images at that size too, so its
threshold keeps its meaning: "closer to a training image than almost any unseen real image".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxraug.core.errors import CxraugError, WeightsError
from cxraug.data.labels import OBSERVATIONS

REFERENCE_NAME = "reference.npz"
KEYS = ("train_ids", "train_labels", "train_images", "val_ids", "val_labels", "val_images")


@dataclass
class Rows:
    """Labelled images as arrays, with the few dataset attributes synth reads (``ids``,
    ``labels``, ``len``)."""

    ids: np.ndarray
    labels: np.ndarray
    images: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Reference:
    train: Rows
    val: Rows

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, train_ids=self.train.ids.astype(str), train_labels=self.train.labels,
                            train_images=self.train.images, val_ids=self.val.ids.astype(str),
                            val_labels=self.val.labels, val_images=self.val.images)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Reference:
        """Read ``reference.npz`` (plain arrays only: ``allow_pickle=False``)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in KEYS if k not in z.files]
                if missing:
                    raise WeightsError(f"{path}: not a cxraug model reference (lacks {missing[0]}); "
                                       "re-export the model with cxraug export")
                d = {k: z[k] for k in KEYS}
        except (OSError, ValueError, EOFError) as e:
            raise WeightsError(f"{path}: unreadable model reference ({str(e).splitlines()[0][:100]}); "
                               "reinstall or re-export the model") from None
        return cls(Rows(d["train_ids"], d["train_labels"].astype(np.float32), d["train_images"]),
                   Rows(d["val_ids"], d["val_labels"].astype(np.float32), d["val_images"]))


def known_labels(train_labels: np.ndarray) -> list[str]:
    """Observations with at least one positive training image: what a generator can be asked for."""

    y = np.asarray(train_labels)
    return [o for i, o in enumerate(OBSERVATIONS) if (y[:, i] == 1).any()]


def check_known(labels, train_labels: np.ndarray, model: str) -> None:
    """Refuse target labels the generator never saw a positive image of, naming the ones it knows."""

    known = known_labels(train_labels)
    unknown = [x for x in labels if x not in known]
    if unknown:
        name = unknown[0].lower()
        raise CxraugError(f"--labels {name}: model {model} was not trained on any {name} image; "
                          f"it knows: {', '.join(k.lower() for k in known) or 'no labels'}")


def downsample(images: np.ndarray, size: int) -> np.ndarray:
    """``uint8 [N, S, S]`` -> ``uint8 [N, size, size]`` by area averaging (``S`` a multiple of ``size``)."""
    images = np.asarray(images)
    side = images.shape[-1]
    if side == size:
        return images
    if side % size:
        raise ValueError(f"cannot area-downsample {side} px images to {size} px (not a multiple)")
    f = side // size
    x = images.reshape(len(images), size, f, size, f).astype(np.float32).mean(axis=(2, 4))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def build_reference(train_ids, train_labels, train_images, val_ids, val_labels, val_images,
                    reference_size: int) -> Reference:
    train = Rows(np.asarray(train_ids).astype(str), np.asarray(train_labels, np.float32),
                 np.concatenate([downsample(train_images[i:i + 512], reference_size)
                                 for i in range(0, len(train_images), 512)]))
    val = Rows(np.asarray(val_ids).astype(str), np.asarray(val_labels, np.float32),
               np.asarray(val_images, np.uint8))
    return Reference(train, val)
