"""Patient-level bootstrap intervals and paired differences."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxraug.metrics.auc import mean_auc
from cxraug.metrics.bootstrap import bootstrap_auc, paired_difference, patient_weights, weighted_auc


def test_weighted_auc_equals_sklearn_and_duplicated_rows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40).astype(float)
    s = np.round(rng.random(40), 1)  # many ties
    w = rng.integers(0, 4, (5, 40))
    got = weighted_auc(y, s, w)
    for b in range(5):
        assert got[b] == pytest.approx(roc_auc_score(y, s, sample_weight=w[b]))
        dup = np.repeat(np.arange(40), w[b])
        assert got[b] == pytest.approx(roc_auc_score(y[dup], s[dup]))
    assert np.isnan(weighted_auc(np.ones(3), np.arange(3.0), np.ones((1, 3))))[0]


def test_resamples_draw_patients_not_images():
    # patient "big" has 50 images, the 20 others one each
    pids = np.array(["big"] * 50 + [f"p{i}" for i in range(20)])
    w = patient_weights(pids, 200, np.random.default_rng(0))
    assert (w[:, :50] == w[:, :1]).all()  # all images of a patient share its draw count
    assert (w[:, :1] + w[:, 50:].sum(axis=1, keepdims=True) == 21).all()  # 21 patients drawn
    sizes = w.sum(axis=1)
    assert set(np.unique(sizes)) - {20, 21, 70}  # resample size varies in steps of 49 images
    assert ((sizes - 21) % 49 == 0).all()


def _clustered(n_pat=12, per=10, seed=0):
    """Each patient's images share one label and nearly one score (perfectly clustered)."""
    rng = np.random.default_rng(seed)
    lab = np.arange(n_pat) % 2
    score = np.clip(lab * 0.3 + rng.random(n_pat) * 0.7, 0, 1)
    y = np.repeat(lab, per)[:, None].astype(float)
    s = (np.repeat(score, per) + rng.random(n_pat * per) * 1e-3)[:, None]
    return y, s, np.repeat([f"p{i}" for i in range(n_pat)], per)


def test_patient_bootstrap_is_wider_than_image_bootstrap_for_clustered_data():
    y, s, pids = _clustered()
    by_patient = bootstrap_auc(y, s, pids, n_boot=400, seed=1)
    by_image = bootstrap_auc(y, s, np.arange(len(y)).astype(str), n_boot=400, seed=1)
    assert by_patient["mauc"] == by_image["mauc"] == pytest.approx(mean_auc(y, s))
    width = lambda r: r["ci"][1] - r["ci"][0]
    assert width(by_patient) > 2 * width(by_image)
    assert by_patient["ci"][0] <= by_patient["mauc"] <= by_patient["ci"][1]
    assert by_patient["n_patients"] == 12 and by_image["n_patients"] == 120


def test_bootstrap_is_seeded_and_reports_labels():
    y, s, pids = _clustered()
    y2 = np.concatenate([y, np.full_like(y, np.nan)], axis=1)  # second label all missing
    a = bootstrap_auc(y2, np.concatenate([s, s], 1), pids, n_boot=100, seed=3,
                      label_names=["Edema", "Fracture"])
    b = bootstrap_auc(y2, np.concatenate([s, s], 1), pids, n_boot=100, seed=3,
                      label_names=["Edema", "Fracture"])
    assert a == b
    assert a["labels"] == ["Edema"] and a["per_label"]["Fracture"] is None
    assert a["per_label"]["Edema"]["auc"] == a["mauc"]


def test_one_class_resamples_are_dropped_with_a_warning():
    rng = np.random.default_rng(0)
    n = 30
    pids = np.array([f"p{i}" for i in range(n)])
    y = np.zeros((n, 2))
    y[:, 0] = np.arange(n) % 2
    y[0, 1] = 1  # label 1: a single positive patient, absent from ~37% of resamples
    s = rng.random((n, 2))
    with pytest.warns(UserWarning, match="dropped"):
        r = bootstrap_auc(y, s, pids, n_boot=300, seed=0, label_names=["a", "b"])
    assert 100 < r["n_valid"] < 280
    assert np.isfinite(r["ci"]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bootstrap_auc(y[:, :1], s[:, :1], pids, n_boot=300, seed=0)  # balanced label: no warning


def test_paired_difference_zero_for_identical_scores():
    y, s, pids = _clustered()
    d = paired_difference(y, s, s.copy(), pids, n_boot=200, seed=0)
    assert d["diff"] == 0 and d["mean"] == 0 and d["ci"] == (0.0, 0.0)
    assert d["p_value"] == 1.0 and d["n_valid"] == 200


def test_paired_difference_detects_a_better_arm():
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, (n, 2)).astype(float)
    ref = rng.random((n, 2))
    arm = ref + 0.8 * y  # informative
    pids = np.repeat([f"p{i}" for i in range(n // 4)], 4)
    d = paired_difference(y, arm, ref, pids, n_boot=300, seed=0)
    assert d["diff"] == pytest.approx(mean_auc(y, arm) - mean_auc(y, ref))
    assert d["ci"][0] > 0 and d["p_value"] < 0.01
    flipped = paired_difference(y, ref, arm, pids, n_boot=300, seed=0)
    assert flipped["ci"] == pytest.approx((-d["ci"][1], -d["ci"][0]))
