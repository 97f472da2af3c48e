"""Generative metrics on feature arrays and images: FID, KID, precision/recall, density/coverage,
the classifier two-sample test and SSIM diversity. Pure numerics: the ``cxraug eval`` quality
card that extracts features and computes these into a card is :mod:`cxraug.experiments.quality`.

Feature metrics take ``float [N, F]`` feature arrays from one extractor. The two-sample test
(C2ST) is the cross-validated AUC of telling two feature sets apart (0.5 = indistinguishable).

References: FID (Heusel et al. 2017), KID (Binkowski et al. 2018), precision/recall
(Kynkaanniemi et al. 2019), density/coverage (Naeem et al. 2020), C2ST (Lopez-Paz & Oquab 2017).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg

from cxraug.core.errors import DataError

C2ST_FOLDS = 5
METRIC_KEYS = ("fid", "kid_mean", "kid_std", "precision", "recall", "density", "coverage")


# ------------------------------------------------------------------------------ feature metrics

def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``||mu1 - mu2||^2 + Tr(s1 + s2 - 2 sqrt(s1 s2))``."""
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular with fewer samples than features; handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = np.atleast_2d(linalg.sqrtm(sigma1 @ sigma2))
    if not np.isfinite(covmean).all():
        # singular product (fewer samples than features): regularise as pytorch-fid does
        offset = np.eye(len(mu1)) * eps
        covmean = np.atleast_2d(linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset)))
    # sqrtm of a product of PSD matrices is real in theory; numerical noise leaves small imaginary parts
    covmean = np.real(covmean)
    return float(max(0.0, diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)))


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between feature sets ``[N, F]`` and ``[M, F]`` (Gaussian fits; N, M >= 2)."""
    a, b = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    return frechet_distance(a.mean(0), np.atleast_2d(np.cov(a, rowvar=False)),
                            b.mean(0), np.atleast_2d(np.cov(b, rowvar=False)))


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the kernel ``(x.y / F + 1)^3`` over random subsets -> (mean, std)."""
    a, b = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise DataError(f"KID needs at least 2 images per side, got {len(a)} real and {len(b)} synthetic")
    rng = np.random.default_rng(seed)
    d = a.shape[1]
    vals = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        off = m * (m - 1)
        vals.append((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off
                    - 2 * kxy.mean())
    return float(np.mean(vals)), float(np.std(vals))


def _kth_radius(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row of ``x`` to its k-th nearest other row."""
    d = torch.cdist(torch.from_numpy(x), torch.from_numpy(x))
    return d.kthvalue(k + 1, dim=1).values.numpy()  # +1: the point itself sits at distance 0


def manifold_metrics(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """Precision/recall (Kynkaanniemi et al. 2019) and density/coverage (Naeem et al. 2020)
    with k-NN balls; both sets need more than ``k`` rows."""
    a, b = np.asarray(real, np.float32), np.asarray(fake, np.float32)
    if min(len(a), len(b)) <= k:
        raise DataError(f"precision/recall with k={k} need more than {k} images per side, got "
                        f"{len(a)} real and {len(b)} synthetic")
    ra, rb = _kth_radius(a, k), _kth_radius(b, k)
    d = torch.cdist(torch.from_numpy(a), torch.from_numpy(b)).numpy()  # [N_real, N_fake]
    inside_real = d <= ra[:, None]  # fake j inside real i's ball
    return {
        "precision": float(inside_real.any(0).mean()),
        "recall": float((d <= rb[None, :]).any(1).mean()),
        "density": float(inside_real.sum(0).mean() / k),
        "coverage": float((d.min(1) <= ra).mean()),
    }


def feature_metrics(real: np.ndarray, fake: np.ndarray, k: int = 3, seed: int = 0,
                    kid_subsets: int = 100, kid_subset_size: int = 1000) -> dict[str, float]:
    """All feature metrics of one real/synthetic pair of feature sets."""
    kmean, kstd = kid(real, fake, kid_subsets, kid_subset_size, seed)
    return {"fid": fid(real, fake), "kid_mean": kmean, "kid_std": kstd, **manifold_metrics(real, fake, k)}


def subsample_rows(n: int, max_images: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a seeded random ``max_images`` of ``n`` rows; all of them when that is None or >= n."""
    if max_images is None or n <= max_images:
        return np.arange(n)
    return np.sort(rng.choice(n, max_images, replace=False))


def two_sample_auc(a: np.ndarray, b: np.ndarray, folds: int = C2ST_FOLDS, seed: int = 0) -> dict:
    """Classifier two-sample test: how well a logistic regression on standardised features tells
    rows of ``a`` from rows of ``b``, as the ROC AUC over stratified k-fold held-out predictions
    (mean and std over folds). 0.5 = indistinguishable, 1 = fully separable. The larger side is
    subsampled to the smaller (seeded), so both classes weigh the same in training."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = min(len(a), len(b))
    if n < folds:
        raise DataError(f"the two-sample test ({folds}-fold) needs at least {folds} images per side, "
                        f"got {len(a)} and {len(b)}")
    rng = np.random.default_rng([seed, 3])
    a, b = (x[subsample_rows(len(x), n, rng)] for x in (a, b))
    x, y = np.concatenate([a, b]), np.repeat([0, 1], n)
    aucs = []
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        with warnings.catch_warnings():  # an unconverged fit still gives a valid held-out AUC
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x[train], y[train])
        aucs.append(roc_auc_score(y[test], model.predict_proba(x[test])[:, 1]))
    return {"auc": float(np.mean(aucs)), "auc_std": float(np.std(aucs)), "n_per_side": int(n),
            "folds": folds, "model": "standardised features -> LogisticRegression", "seed": seed}


def ssim_diversity(images: np.ndarray, groups: np.ndarray, pairs: int = 50,
                   seed: int = 0) -> dict[str, object]:
    """Mean SSIM over seeded random pairs within each group (same target/prompt) of ``uint8
    [N, H, W]`` images. Higher = more alike; lower = more diverse. Groups of < 2 are skipped."""
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(seed)
    per_group, everything = {}, []
    for g in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == g)
        if len(idx) < 2:
            continue
        vals = []
        for _ in range(pairs):
            i, j = rng.choice(idx, 2, replace=False)
            vals.append(structural_similarity(images[i], images[j], data_range=255))
        per_group[str(g)] = float(np.mean(vals))
        everything += vals
    return {"mean_pairwise_ssim": float(np.mean(everything)) if everything else None,
            "pairs_per_group": pairs, "per_group": per_group}
