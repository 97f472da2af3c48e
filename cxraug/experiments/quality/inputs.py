"""Inputs of the ``cxraug eval`` quality card: real and synthetic images at one size, the
real-vs-real floor's split, and which real images match a cohort target."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from cxraug.cohorts.store import read_manifest
from cxraug.core.errors import DataError
from cxraug.data import labels as L
from cxraug.data.adapters import load_dataset, resolve_data
from cxraug.data.tables import IMAGE_SUFFIXES
from cxraug.data.transforms import load_grayscale, resize_square
from cxraug.metrics.generative import subsample_rows

NEGATIVE = "negative"


def read_images(paths: list, image_size: int, stats_size: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Each file read once -> (``uint8 [N, S, S]`` aspect-preserving pad to ``image_size``, and
    with ``stats_size`` the same images centre-cropped square at that size for the image
    statistics, else None)."""
    pads, crops = [], []
    for p in paths:
        img = load_grayscale(p)
        pads.append(resize_square(img, image_size))
        if stats_size is not None:
            crops.append(resize_square(img, stats_size, mode="crop"))
    return np.stack(pads), (np.stack(crops) if stats_size is not None else None)


def load_real_images(data: str | Path, image_size: int, max_images: int | None, seed: int,
                     kind: str = "auto", stats_size: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Any dataset cxraug loads -> (``uint8 [N, S, S]`` images, raw labels ``[N, 14]``, the
    centre-cropped images of :func:`read_images` or None)."""
    ds = load_dataset(resolve_data(data), kind)
    keep = subsample_rows(len(ds), max_images, np.random.default_rng([seed, 1]))
    images, crops = read_images([ds.paths[i] for i in keep], image_size, stats_size)
    return images, ds.labels[keep], crops


def load_synth(folder: Path, image_size: int, max_images: int | None, seed: int,
               stats_size: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A ``cxraug synth`` cohort (accepted rows of manifest.csv) or a plain image folder ->
    (``uint8 [M, S, S]`` images, target per image (``"all"`` for a plain folder), the
    centre-cropped images of :func:`read_images` or None)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--synth {folder}: folder not found")
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        df = read_manifest(manifest, ("file", "accepted", "target"))
        df = df[df["accepted"]]
        if df.empty:
            raise DataError(f"{manifest}: no accepted images")
        files, targets = [folder / f for f in df["file"]], df["target"].to_numpy(dtype=str)
    else:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"--synth {folder}: no manifest.csv and no image files")
        targets = np.array(["all"] * len(files))
    keep = subsample_rows(len(files), max_images, np.random.default_rng([seed, 2]))
    images, crops = read_images([files[i] for i in keep], image_size, stats_size)
    return images, targets[keep], crops


def floor_split(n_real: int, n_synth: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint random split of ``n_real`` real images for the real-vs-real floor, as sorted
    indices ``(reference, compared)``: ``compared`` stands in for the synthetic set and gets as
    many images as it has (at most half the real ones), ``reference`` stands in for the real side
    and gets the rest, so the floor's n is as close to the synthetic comparison's as the data allows."""
    n_cmp = min(n_synth, n_real // 2)
    order = np.random.default_rng([seed, 4]).permutation(n_real)
    return np.sort(order[n_cmp:]), np.sort(order[:n_cmp])


def _not_in(images: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Mask of ``images`` that are not pixel-identical (at the eval size) to any of ``other``:
    a --real-ref that shares images with --real would put the floor too low."""
    seen = {hashlib.sha1(x.tobytes()).digest() for x in other}
    return np.array([hashlib.sha1(x.tobytes()).digest() not in seen for x in images], dtype=bool)


def canonical_target(target: str) -> str:
    """A cohort target as the label contract spells it; ``negative``/``all``/unknown unchanged."""
    if target in ("all", NEGATIVE):
        return target
    try:
        return L.canonical(target)
    except L.UnknownLabelError:
        return target


def real_mask(raw: np.ndarray, target: str) -> np.ndarray:
    """Real images matching a cohort target: positive for it, or for ``negative`` no positive
    finding and at least one explicit negative (or No Finding = 1)."""
    if target.lower() == NEGATIVE:
        findings = np.delete(raw, L.index("No Finding"), axis=1)
        return ((raw[:, L.index("No Finding")] == 1)
                | (~(findings == 1).any(1) & (findings == 0).any(1)))
    return raw[:, L.index(L.canonical(target))] == 1


def wanted_labels(labels: str | list[str] | None) -> set[str] | None:
    """``--labels``: observation names (aliases allowed) and/or ``negative``; None = all."""
    if not labels:
        return None
    items = [x.strip() for x in (labels.split(",") if isinstance(labels, str) else labels) if x.strip()]
    names = [x for x in items if x.lower() != NEGATIVE]
    return (set(L.parse_label_list(names)) if names else set()) | ({NEGATIVE} if len(names) < len(items) else set())


def load_real_ref(real_ref: str | Path, real_img: np.ndarray, image_size: int, max_images: int | None,
                   seed: int, kind: str, stats_size: int | None = None) -> tuple[np.ndarray, int, np.ndarray | None]:
    """``--real-ref`` images without those also in ``--real`` -> (images, how many were dropped,
    their centre-cropped copies of :func:`read_images` or None)."""
    ref_img, _, crops = load_real_images(real_ref, image_size, max_images, seed + 1, kind, stats_size)
    keep = _not_in(ref_img, real_img)
    if not keep.any():
        raise DataError(f"--real-ref {real_ref}: every image is also in --real; pass a disjoint real set "
                        "(e.g. the other split) or leave --real-ref out to split --real in two")
    return ref_img[keep], int((~keep).sum()), (None if crops is None else crops[keep])


def check_real_ref(real_ref: str | Path | None) -> None:
    if real_ref is not None and not resolve_data(real_ref).expanduser().exists():
        raise DataError(f"--real-ref {real_ref}: not found; pass a second real dataset (e.g. the test "
                        "split's folder or manifest) or leave it out to split --real in two")
