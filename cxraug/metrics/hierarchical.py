"""Intervals for experiments with several sources of variance: a hierarchical paired bootstrap.

A limited-data result varies with (1) which patients were drawn into the real subset, (2) the
training seed (initialisation, batch order, augmentation) and (3) which patients make up the test
set. An interval that resamples only test patients, or averages per-seed intervals, ignores the
first two. Here every bootstrap replicate resamples all three levels, in order:

1. subset draws, with replacement (``D`` of ``D``);
2. within each drawn subset, seeds with replacement (``S`` of ``S``);
3. test patients (one patient resample per replicate, shared by every job, so that differences
   between arms are paired on the same test patients).

The replicate's value is the mean over the drawn (draw, seed) jobs of their metric on the drawn
test patients. Differences between two arms use the same draws, seeds and patients for both
(paired at every level), and a ratio of two differences uses the same replicates for numerator
and denominator. The replicate indices depend only on ``seed`` and the shape, so every arm and
difference of one report is resampled identically.

With few subset draws the percentile interval is too narrow (a bootstrap of ``D`` values
underestimates their variance by ``(D - 1) / D``, and the percentile method adds its own
small-sample shortfall); ``tests/metrics/test_metrics_hierarchical.py`` measures the coverage by
simulation, and the benchmark docs report it for the sweep's ``D``.

:func:`holm` adjusts a family of p-values (Holm 1979, step-down, controls the family-wise error).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxraug.metrics.auc import check_inputs, has_both_classes, mean_auc
from cxraug.metrics.bootstrap import _resample_aucs, patient_weights

#: Nominal coverage of every interval this module returns.
LEVEL = 0.95


def job_resamples(y_true: np.ndarray, score_sets: Sequence[np.ndarray], patient_ids: np.ndarray,
                  n_boot: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """mAUC of each job on the full test set and on ``n_boot`` shared patient resamples.

    Args:
        y_true: ``[N, L]`` targets in {0, 1, NaN}; ``score_sets``: one ``[N, L]`` per job;
        patient_ids: ``[N]``.
    Returns:
        ``(point [J], boot [J, B])``; only resamples where every evaluated label keeps both
        classes are returned (the same ones for every job), so ``B <= n_boot``.
    """
    checked = [check_inputs(y_true, s) for s in score_sets]
    y = checked[0][0]
    scores = [s for _, s in checked]
    evaluated = has_both_classes(y)
    if not evaluated.any():
        raise ValueError("no label has both classes in the test set; mAUC is undefined")
    point = np.array([mean_auc(y, s) for s in scores], dtype=float)
    aucs = _resample_aucs(y, scores, np.asarray(patient_ids), n_boot, seed, evaluated)  # [J, B, L]
    valid = ~np.isnan(aucs[:, :, evaluated]).any(axis=(0, 2))
    return point, aucs[:, valid][:, :, evaluated].mean(axis=2)


def replicate_indices(n_draws: int, n_seeds: int, n_boot: int, seed: int = 0):
    """``(draws [B, D], seeds [B, D, S])``: the draws and, within each, the seeds of every
    replicate (with replacement); a function of the shape and ``seed`` only."""
    rng = np.random.default_rng([seed, n_draws, n_seeds, n_boot])
    return (rng.integers(0, n_draws, size=(n_boot, n_draws)),
            rng.integers(0, n_seeds, size=(n_boot, n_draws, n_seeds)))


def hierarchical_samples(boot: np.ndarray, seed: int = 0) -> np.ndarray:
    """``boot [D, S, B]`` (a metric, or a paired difference of two, per draw, seed and test
    patient resample) -> ``[B]`` replicate means, resampling draws, then seeds, then patients."""
    n_draws, n_seeds, n_boot = boot.shape
    boot = _inflated(boot)
    d, s = replicate_indices(n_draws, n_seeds, n_boot, seed)
    b = np.arange(n_boot)[:, None, None]
    return boot[d[:, :, None], s, b].mean(axis=(1, 2))


def _inflated(boot: np.ndarray) -> np.ndarray:
    """Widen the spread of draws around their mean by ``sqrt(D / (D - 1))`` and of seeds around
    their draw's mean by ``sqrt(S / (S - 1))``: resampling ``D`` values with replacement
    underestimates their variance by ``(D - 1) / D`` (Davison & Hinkley 1997, sec. 2.3 and 3.8)."""
    n_draws, n_seeds, _ = boot.shape
    centre = boot.mean(axis=2, keepdims=True)  # [D, S, 1]: each job's mean over patient resamples
    draw = centre.mean(axis=1, keepdims=True)  # [D, 1, 1]
    grand = draw.mean(axis=0, keepdims=True)
    out = boot.copy()
    if n_draws > 1:
        out += (np.sqrt(n_draws / (n_draws - 1)) - 1) * (draw - grand)
    if n_seeds > 1:
        out += (np.sqrt(n_seeds / (n_seeds - 1)) - 1) * (centre - draw)
    return out


def interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of replicate values at ``level``."""
    a = (1 - level) / 2
    lo, hi = np.percentile(samples, [100 * a, 100 * (1 - a)])
    return float(lo), float(hi)


def p_value(samples: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the difference is 0" (at least ``1 / B``)."""
    n = len(samples)
    tail = min((samples <= 0).sum(), (samples >= 0).sum())
    return float(min(1.0, max(2 * tail, 1) / n))


def summarise(point: np.ndarray, boot: np.ndarray, seed: int = 0, level: float = LEVEL) -> dict:
    """``point [D, S]``, ``boot [D, S, B]`` -> estimate (mean of the jobs), interval, p-value
    (meaningful for a difference) and the spread across draws and seeds."""
    samples = hierarchical_samples(boot, seed)
    lo, hi = interval(samples, level)
    return {"estimate": float(point.mean()), "ci": [lo, hi], "level": level,
            "p_value": p_value(samples), "sd_jobs": float(point.std(ddof=1)) if point.size > 1 else 0.0,
            "sd_draws": float(point.mean(axis=1).std(ddof=1)) if point.shape[0] > 1 else None,
            "draws": int(point.shape[0]), "seeds": int(point.shape[1]), "n_boot": int(len(samples))}


def ratio(num: tuple[np.ndarray, np.ndarray], den: tuple[np.ndarray, np.ndarray], seed: int = 0,
          level: float = LEVEL) -> dict:
    """``mean(num) / mean(den)`` of two paired differences (each ``(point [D, S], boot [D, S, B])``)
    on the same replicates; undefined (None, with the reason) when the denominator's interval
    includes 0."""
    dn, dd = hierarchical_samples(num[1], seed), hierarchical_samples(den[1], seed)
    lo_d, hi_d = interval(dd, level)
    out = {"numerator": float(num[0].mean()), "denominator": float(den[0].mean()),
           "denominator_ci": [lo_d, hi_d], "value": None, "ci": None, "reason": None}
    if lo_d <= 0 <= hi_d:
        out["reason"] = "the denominator's interval includes 0"
        return out
    out["value"] = out["numerator"] / out["denominator"]
    out["ci"] = list(interval(dn / dd, level))
    return out


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    m = len(p)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out.tolist()


def simulate_coverage(n_draws: int, n_seeds: int, n_sims: int = 300, seed: int = 0,
                      tau: float = 0.02, sigma_seed: float = 0.01, n_patients: int = 200,
                      n_boot: int = 400, level: float = LEVEL) -> float:
    """Share of ``n_sims`` simulated experiments whose interval holds the known truth.

    Each experiment: a metric that is a mean over ``n_patients`` test patients (values
    N(0.8, 0.1); the truth is 0.8), shifted by a random effect per subset draw (sd ``tau``) and
    per seed (sd ``sigma_seed``); its patient resamples are real bootstrap resamples.
    """
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_sims):
        x = rng.normal(0.8, 0.1, n_patients)
        a = rng.normal(0, tau, n_draws)
        e = rng.normal(0, sigma_seed, (n_draws, n_seeds))
        w = patient_weights(np.arange(n_patients), n_boot, rng)
        resampled = (w * x).sum(1) / w.sum(1)
        point = x.mean() + a[:, None] + e
        boot = resampled[None, None, :] + a[:, None, None] + e[:, :, None]
        lo, hi = summarise(point, boot, seed=int(rng.integers(1 << 30)), level=level)["ci"]
        hits += lo <= 0.8 <= hi
    return hits / n_sims
