"""The hierarchical paired bootstrap: coverage by simulation with a known truth, pairing, Holm."""

import numpy as np
import pytest

from cxraug.metrics import hierarchical as H
from cxraug.metrics.auc import mean_auc
from cxraug.metrics.bootstrap import patient_weights


def test_coverage_is_near_the_nominal_level():
    """Fails if the level or the resampling of any source of variance changes: dropping the draw
    level (or the seed level, or the patients) or a 60% level gives far lower coverage."""
    assert H.LEVEL == 0.95
    cov = H.simulate_coverage(10, 2)
    assert 0.90 <= cov <= 0.99, cov
    # the sweep's shape (3 draws x 2 seeds): the known small-sample shortfall, bounded
    assert H.simulate_coverage(3, 2) >= 0.83
    assert H.simulate_coverage(10, 2, n_sims=100, level=0.6) < 0.75  # the test sees a level change


def test_ignoring_the_draws_undercovers():
    """The old practice (patients only) is measurably wrong on the same simulation."""
    x_hits = []
    rng = np.random.default_rng(1)
    for _ in range(200):
        x = rng.normal(0.8, 0.1, 200)
        a = rng.normal(0, 0.02, 5)
        e = rng.normal(0, 0.01, (5, 2))
        w = patient_weights(np.arange(200), 400, rng)
        samples = (w * x).sum(1) / w.sum(1) + (a[:, None] + e).mean()
        lo, hi = H.interval(samples)  # patient resamples around the jobs' mean only
        x_hits.append(lo <= 0.8 <= hi)
    assert np.mean(x_hits) < 0.85  # measured 0.77 against the nominal 0.95


def test_differences_are_paired_at_every_level():
    rng = np.random.default_rng(0)
    boot = rng.normal(0.8, 0.02, (3, 2, 300))
    point = boot.mean(axis=2)
    same = H.summarise(point - point, boot - boot)
    assert same["estimate"] == 0 and same["ci"] == [0.0, 0.0] and same["p_value"] == 1.0
    shifted = H.summarise(point + 0.05 - point, boot + 0.05 - boot)
    assert shifted["ci"][0] == pytest.approx(0.05) and shifted["p_value"] < 0.01
    # the same replicate indices for every call of one shape: arms are resampled identically
    d1, s1 = H.replicate_indices(3, 2, 300)
    d2, s2 = H.replicate_indices(3, 2, 300)
    assert (d1 == d2).all() and (s1 == s2).all()


def test_job_resamples_match_the_full_test_mauc():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (120, 2)).astype(np.float32)
    scores = [(y * k + rng.normal(0, 1, y.shape)).astype(np.float32) for k in (0.5, 2.0)]
    pids = np.repeat(np.arange(60), 2).astype(str)
    point, boot = H.job_resamples(y, scores, pids, 200, seed=0)
    assert point == pytest.approx([mean_auc(y, s) for s in scores])
    assert boot.shape[0] == 2 and 150 <= boot.shape[1] <= 200
    assert abs(boot[1].mean() - point[1]) < 0.02 and boot[1].mean() > boot[0].mean()


def test_holm():
    assert H.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert H.holm([0.5]) == [0.5]
    assert H.holm([0.6, 0.6]) == [1.0, 1.0]
