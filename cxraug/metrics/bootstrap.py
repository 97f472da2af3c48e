"""Bootstrap confidence intervals for AUC / mAUC, resampled by patient.

Images of one patient are not independent (follow-ups, both views), so the unit of resampling is
the patient: each resample draws ``n_patients`` patients with replacement and takes all images of
every drawn patient (a patient drawn twice counts twice). Resampling images instead would make
intervals too narrow whenever patients have several images.

Implementation: a resample is a vector of per-image weights (how many times the image's patient
was drawn), and the AUC of a resample is the weighted Mann-Whitney statistic, which equals the
AUC of the dataset with those rows duplicated (ties count 1/2, exactly as ``roc_auc_score``
with ``sample_weight``). Evaluating all resamples at once with cumulative sums keeps 1000
resamples x 14 labels to a second or so instead of 14,000 sklearn calls.

One-class resamples: a label that has both classes in the full data can lose all its positives
(or negatives) in a resample. Such a resample has no AUC for that label, so

* a label's own interval uses the resamples where that label has both classes;
* the mAUC interval (and every paired difference) uses only resamples where *every* evaluated
  label has both classes, so each mAUC in the distribution averages the same labels;
* skipped resamples are dropped, not redrawn; ``n_valid`` reports how many were kept, and a
  warning names the worst label when more than 10 % were dropped (rare labels need more
  patients, or fewer labels, for a meaningful interval).

Labels with one class in the full data are not evaluated at all (see :mod:`cxraug.metrics.auc`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from cxraug.metrics.auc import check_inputs, has_both_classes, label_names_or_default, per_label_auc

# Resample weights are materialised in chunks of at most this many (resample, image) entries.
_CHUNK_ENTRIES = 4_000_000


def weighted_auc(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of one label under many weightings at once.

    Args:
        y: ``[n]`` in {0, 1} (no NaN); ``s``: ``[n]`` scores; ``weights``: ``[B, n]`` >= 0.
    Returns:
        ``float64 [B]``; NaN where the weighted positives or negatives sum to zero.
    """
    order = np.argsort(s, kind="stable")
    s_sorted, y_sorted = s[order], y[order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, np.diff(s_sorted) != 0])  # first index of each tie group
    w = weights[:, order].astype(np.float64)
    pos = np.add.reduceat(w * y_sorted, starts, axis=1)
    neg = np.add.reduceat(w * (1.0 - y_sorted), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    num = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def patient_weights(patient_ids: Sequence[str] | np.ndarray, n_boot: int,
                    rng: np.random.Generator) -> np.ndarray:
    """``int [n_boot, N]``: per image, how often its patient was drawn in each resample.

    Each row draws ``n_patients`` patients uniformly with replacement (a multinomial count per
    patient), so all images of a patient always share one weight.
    """
    _, inverse = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    n_pat = int(inverse.max()) + 1
    counts = rng.multinomial(n_pat, np.full(n_pat, 1.0 / n_pat), size=n_boot)
    return counts[:, inverse]


def _resample_aucs(y: np.ndarray, score_sets: list[np.ndarray], patient_ids: np.ndarray,
                   n_boot: int, seed: int, evaluated: np.ndarray) -> np.ndarray:
    """``float64 [A, n_boot, L]`` AUCs of each score set under the SAME patient resamples
    (NaN for labels not ``evaluated``)."""
    n, n_labels = y.shape
    if len(patient_ids) != n:
        raise ValueError(f"{len(patient_ids)} patient ids for {n} images")
    rng = np.random.default_rng(seed)
    out = np.full((len(score_sets), n_boot, n_labels), np.nan)
    chunk = max(1, _CHUNK_ENTRIES // max(n, 1))
    for b0 in range(0, n_boot, chunk):
        w = patient_weights(patient_ids, min(chunk, n_boot - b0), rng)
        for j in np.flatnonzero(evaluated):
            keep = ~np.isnan(y[:, j])
            for a, s in enumerate(score_sets):
                out[a, b0:b0 + len(w), j] = weighted_auc(y[keep, j], s[keep, j], w[:, keep])
    return out


def _ci(values: np.ndarray, alpha: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return (float(lo), float(hi))


def _valid_resamples(aucs: np.ndarray, evaluated: np.ndarray, names: list[str]) -> np.ndarray:
    """``bool [B]``: resamples where every evaluated label has both classes; warn if many fail."""
    ok_label = ~np.isnan(aucs[:, evaluated])
    valid = ok_label.all(axis=1)
    if len(valid) and valid.mean() < 0.9:
        worst = np.array(names)[evaluated][np.argmin(ok_label.mean(axis=0))]
        warnings.warn(f"bootstrap: {int((~valid).sum())} of {len(valid)} patient resamples "
                      f"dropped because a label had one class (most often {worst!r}); the "
                      f"interval rests on {int(valid.sum())} resamples", stacklevel=3)
    return valid


def _prepare(y_true, score_sets, patient_ids, label_names):
    checked = [check_inputs(y_true, s) for s in score_sets]
    y = checked[0][0]
    names = label_names_or_default(label_names, y.shape[1])
    return y, [s for _, s in checked], np.asarray(patient_ids), names, has_both_classes(y)


def bootstrap_auc(y_true: np.ndarray, scores: np.ndarray, patient_ids: Sequence[str],
                  n_boot: int = 1000, seed: int = 0, label_names: Sequence[str] | None = None,
                  alpha: float = 0.05) -> dict[str, Any]:
    """Point mAUC / per-label AUC with ``1 - alpha`` percentile intervals, resampled by patient.

    Args:
        y_true: ``[N, L]`` in {0, 1, NaN}; ``scores``: ``[N, L]``; ``patient_ids``: ``[N]``.
    Returns:
        ``{"mauc": float | None, "ci": (lo, hi), "per_label": {name: {"auc", "ci"} | None},
        "labels": evaluated names, "n_boot", "n_valid", "n_patients"}``.
    """
    y, (s,), pids, names, evaluated = _prepare(y_true, [scores], patient_ids, label_names)
    point = per_label_auc(y, s, names)
    aucs = _resample_aucs(y, [s], pids, n_boot, seed, evaluated)[0]
    valid = _valid_resamples(aucs, evaluated, names) if evaluated.any() else np.zeros(n_boot, bool)
    mauc_boot = aucs[valid][:, evaluated].mean(axis=1)
    used = [a for a in point.values() if a is not None]
    return {
        "mauc": float(np.mean(used)) if used else None,
        "ci": _ci(mauc_boot, alpha),
        "per_label": {n: None if point[n] is None else {"auc": point[n], "ci": _ci(aucs[:, j], alpha)}
                      for j, n in enumerate(names)},
        "labels": [n for n, e in zip(names, evaluated) if e],
        "n_boot": n_boot,
        "n_valid": int(valid.sum()),
        "n_patients": len(np.unique(pids.astype(str))),
    }


def paired_difference(y_true: np.ndarray, scores_arm: np.ndarray, scores_ref: np.ndarray,
                      patient_ids: Sequence[str], n_boot: int = 1000, seed: int = 0,
                      label_names: Sequence[str] | None = None,
                      alpha: float = 0.05) -> dict[str, Any]:
    """mAUC(arm) - mAUC(ref) on one test set, with a paired patient-bootstrap interval.

    Both arms are scored on the SAME resamples, so patient-level difficulty cancels out of the
    difference and its interval is much tighter than comparing two separate intervals.

    Returns:
        ``{"diff": point difference, "mean": mean over resamples, "ci": (lo, hi),
        "p_value": two-sided bootstrap p (2 x the smaller tail beyond 0, capped at 1),
        "per_label": {name: {"diff", "ci"} | None}, "labels", "n_boot", "n_valid"}``.
    """
    y, (sa, sr), pids, names, evaluated = _prepare(y_true, [scores_arm, scores_ref], patient_ids,
                                                   label_names)
    if not evaluated.any():
        raise ValueError("no label has both classes in the test targets; nothing to compare")
    pa, pr = per_label_auc(y, sa, names), per_label_auc(y, sr, names)
    aucs = _resample_aucs(y, [sa, sr], pids, n_boot, seed, evaluated)
    valid = _valid_resamples(aucs[0], evaluated, names)  # same y and weights -> same for both
    d_labels = aucs[0] - aucs[1]
    d = d_labels[valid][:, evaluated].mean(axis=1)
    point = float(np.mean([pa[n] - pr[n] for n, e in zip(names, evaluated) if e]))
    p = min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))) if len(d) else float("nan")
    return {
        "diff": point,
        "mean": float(d.mean()) if len(d) else float("nan"),
        "ci": _ci(d, alpha),
        "p_value": float(p),
        "per_label": {n: {"diff": pa[n] - pr[n], "ci": _ci(d_labels[:, j], alpha)} if e else None
                      for j, (n, e) in enumerate(zip(names, evaluated))},
        "labels": [n for n, e in zip(names, evaluated) if e],
        "n_boot": n_boot,
        "n_valid": int(valid.sum()),
    }
