"""Masked per-label AUC and mAUC against hand-computed values."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxraug.metrics.auc import has_both_classes, mean_auc, per_label_auc

NAN = math.nan

# label a: NaN row 4 would change the AUC if it were counted as a negative (score 0.95).
# label b: one tie between a positive and a negative (counts 1/2).
# label c: only positives among the non-missing rows -> no AUC.
Y = np.array([[1, 1, 1], [0, 0, 1], [1, 0, NAN], [0, 1, 1], [NAN, 1, 1]], dtype=np.float32)
S = np.array([[0.9, 0.5, 0.3], [0.1, 0.5, 0.2], [0.4, 0.2, 0.9], [0.6, 0.8, 0.1], [0.95, 0.1, 0.5]])


def test_per_label_auc_hand_computed():
    aucs = per_label_auc(Y, S, ["a", "b", "c"])
    # a: positives {0.9, 0.4} vs negatives {0.1, 0.6}: 3 of 4 pairs ordered -> 0.75
    assert aucs["a"] == pytest.approx(0.75)
    # b: positives {0.5, 0.8, 0.1} vs negatives {0.5, 0.2}: 0.5 + 1 + 1 + 1 + 0 + 0 = 3.5 of 6
    assert aucs["b"] == pytest.approx(3.5 / 6)
    assert aucs["c"] is None


def test_mean_auc_excludes_one_class_labels():
    assert mean_auc(Y, S) == pytest.approx((0.75 + 3.5 / 6) / 2)
    assert mean_auc(Y[:, 2:], S[:, 2:]) is None
    assert has_both_classes(Y).tolist() == [True, True, False]


def test_nan_rows_ignored_matches_dropping_them():
    keep = ~np.isnan(Y[:, 0])
    assert per_label_auc(Y[:, :1], S[:, :1])["label_0"] == pytest.approx(
        roc_auc_score(Y[keep, 0], S[keep, 0]))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        per_label_auc(np.array([[-1.0], [1.0]]), np.array([[0.1], [0.2]]))
    with pytest.raises(ValueError, match="must both be"):
        per_label_auc(Y, S[:, :2])
    with pytest.raises(ValueError, match="label names"):
        per_label_auc(Y, S, ["a"])
