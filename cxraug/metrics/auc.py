"""Per-label ROC AUC and mAUC with missing labels masked.

Targets follow the cxraug label contract after an uncertainty policy: ``float [N, L]`` with
values 0 / 1 / NaN, where NaN (not labelled, or uncertain under the ``ignore`` policy) is left
out of that label's AUC. A label whose non-missing targets hold only one class has no AUC: it is
reported as ``None`` and left out of the mean (mAUC), never counted as 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score


def check_inputs(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return ``(y [N, L] float64, s [N, L] float64)``; 1-D inputs become ``L = 1``."""
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if s.ndim == 1:
        s = s[:, None]
    if y.shape != s.shape or y.ndim != 2:
        raise ValueError(f"targets {y.shape} and scores {s.shape} must both be [N, L]")
    ok = np.isnan(y) | (y == 0) | (y == 1)
    if not ok.all():
        raise ValueError(f"targets must be 0, 1 or NaN; found {sorted(set(y[~ok].tolist()))[:5]}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    return y, s


def label_names_or_default(label_names: Sequence[str] | None, n_labels: int) -> list[str]:
    if label_names is None:
        return [f"label_{i}" for i in range(n_labels)]
    if len(label_names) != n_labels:
        raise ValueError(f"{len(label_names)} label names for {n_labels} label columns")
    return list(label_names)


def has_both_classes(y_true: np.ndarray) -> np.ndarray:
    """``bool [L]``: which labels have at least one 0 and one 1 among their non-missing targets."""
    y = np.asarray(y_true, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    return (y == 1).any(axis=0) & (y == 0).any(axis=0)


def per_label_auc(y_true: np.ndarray, scores: np.ndarray,
                  label_names: Sequence[str] | None = None) -> dict[str, float | None]:
    """ROC AUC per label over non-missing targets; ``None`` where only one class is present.

    Args:
        y_true: ``[N, L]`` in {0, 1, NaN}; ``scores``: ``[N, L]`` finite (probabilities or logits).
        label_names: keys of the result (default ``label_0``, ``label_1``, ...).
    """
    y, s = check_inputs(y_true, scores)
    names = label_names_or_default(label_names, y.shape[1])
    both = has_both_classes(y)
    out: dict[str, float | None] = {}
    for j, name in enumerate(names):
        if not both[j]:
            out[name] = None
            continue
        keep = ~np.isnan(y[:, j])
        out[name] = float(roc_auc_score(y[keep, j], s[keep, j]))
    return out


def mean_auc(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """mAUC: the mean of :func:`per_label_auc` over labels with both classes (``None`` if none)."""
    aucs = [a for a in per_label_auc(y_true, scores).values() if a is not None]
    return float(np.mean(aucs)) if aucs else None
