"""LNFS scores: the latent features, stage 1 (K-means) and stage 3 (the cross-fitted
discriminator), and the robust z-score they share; see :mod:`cxraug.diffusion.lnfs`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxraug.core.errors import DataError
from cxraug.diffusion.lnfs_config import LNFSConfig

# ---------------------------------------------------------------------------------- helpers

def robust_z(x: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    """``(x - median(ref)) / (1.4826 * MAD(ref))``; falls back to the std, then to 0, when the
    MAD is 0 (fewer than 3 reference values give z = 0: no spread to measure against)."""
    x = np.asarray(x, dtype=np.float64)
    ref = x if ref is None else np.asarray(ref, dtype=np.float64)
    if len(ref) < 3:
        return np.zeros_like(x)
    med = np.median(ref)
    scale = 1.4826 * np.median(np.abs(ref - med))
    if scale <= 1e-12:
        scale = float(np.std(ref))
    if scale <= 1e-12:
        return np.zeros_like(x)
    return (x - med) / scale


def signed_log(z: np.ndarray) -> np.ndarray:
    return np.sign(z) * np.log1p(np.abs(z))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


@dataclass
class Features:
    """``x``: standardised flattened latents ``[N, D]`` (the manifold model's input); ``embed``:
    ``[N, P + 4C]`` PCA coordinates (scaled to unit mean variance) next to the whitened latent
    statistics (K-means and discriminator input)."""

    x: np.ndarray
    embed: np.ndarray
    n_pca: int
    n_stats: int


def latent_statistics(latents: np.ndarray) -> np.ndarray:
    """Per channel: mean, std and mean absolute horizontal / vertical difference of the latent
    map, ``[N, C, h, w]`` -> ``[N, 4C]``. These summarise brightness, contrast and sharpness,
    which PCA of the raw latents mostly discards (a blurred image is *easier* to reconstruct)."""
    lat = np.asarray(latents, dtype=np.float64)
    if lat.ndim != 4:
        return np.zeros((len(lat), 0))
    dx = np.abs(np.diff(lat, axis=3)).mean((2, 3)) if lat.shape[3] > 1 else np.zeros(lat.shape[:2])
    dy = np.abs(np.diff(lat, axis=2)).mean((2, 3)) if lat.shape[2] > 1 else np.zeros(lat.shape[:2])
    return np.concatenate([lat.mean((2, 3)), lat.std((2, 3)), dx, dy], axis=1)


def _whiten(a: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """Standardise, then decorrelate ``[N, F]`` so Euclidean distance is Mahalanobis distance:
    an unusual *combination* of statistics (sharp vertically, smooth horizontally) then counts
    as much as an unusual value. Eigenvalues below ``floor`` x their mean are clamped so that
    near-constant directions are not blown up."""
    a = (a - a.mean(0)) / np.maximum(a.std(0), 1e-12)
    w, v = np.linalg.eigh(np.cov(a, rowvar=False).reshape(a.shape[1], a.shape[1]))
    return (a @ v) / np.sqrt(np.maximum(w, floor * max(w.mean(), 1e-12)))


def latent_features(latents: np.ndarray, cfg: LNFSConfig) -> Features:
    """Latents ``[N, C, h, w]`` (or ``[N, D]``) -> standardised latents and the embedding."""
    from sklearn.decomposition import PCA

    lat = np.asarray(latents, dtype=np.float64)
    if not np.isfinite(lat).all():
        raise DataError("latents contain NaN or inf; check the latent space and the cached moments")
    x = lat.reshape(len(lat), -1)
    x = x - x.mean(0)
    if cfg.standardize:
        x = x / np.maximum(x.std(0), 1e-8)
    x = x.astype(np.float32)  # [N, D] can be large (D = 4096 for SD latents at 256 px)
    n_comp = min(cfg.pca_components, len(x) - 1, x.shape[1])
    if cfg.pca_components == 0 or n_comp < 1:
        pca = x
    else:
        pca = PCA(n_components=n_comp, random_state=cfg.seed).fit_transform(x)
    pca = pca / np.sqrt(max(pca.var(0).mean(), 1e-12))
    stats = latent_statistics(lat) if cfg.latent_stats else np.zeros((len(x), 0))
    stats = _whiten(stats) if stats.shape[1] else stats
    return Features(x, np.concatenate([pca, stats], axis=1), pca.shape[1], stats.shape[1])


# --------------------------------------------------------------------------- 1. K-means

@dataclass
class KMeansStage:
    k: int
    cluster: np.ndarray  # [N] int
    distance: np.ndarray  # [N] distance to the nearest regular (not tiny) centroid
    z: np.ndarray  # [N] robust z of that distance within that cluster
    global_z: np.ndarray  # [N] robust z of the distance to the median of all images
    tiny: np.ndarray  # [N] bool, member of a cluster below min_cluster_share * N / k
    flagged: np.ndarray  # [N] bool: z > kmeans_z, global_z > cfg.global_z, or tiny
    sizes: list[int]


def effective_k(k: int, n: int) -> int:
    """At most one cluster per 20 images: fewer cannot tell a rare mode from chance."""
    return max(1, min(k, n // 20))


def kmeans_stage(feats: np.ndarray, cfg: LNFSConfig) -> KMeansStage:
    """Cluster ``[N, P]`` features; flag far-from-centroid images and tiny clusters.

    Distances and z-scores are taken to the nearest cluster that is not tiny (for members of
    a regular cluster that is their own), so a tiny cluster's members also get a large z.
    """
    from sklearn.cluster import KMeans

    n = len(feats)
    k = effective_k(cfg.k, n)
    km = KMeans(n_clusters=k, n_init=cfg.kmeans_n_init, random_state=cfg.seed).fit(feats)
    cluster = km.labels_.astype(int)
    sizes = np.bincount(cluster, minlength=k)
    tiny_cluster = sizes < cfg.min_cluster_share * n / k
    big = np.flatnonzero(~tiny_cluster) if (~tiny_cluster).any() else np.arange(k)
    d_all = km.transform(feats)[:, big]  # Euclidean distance to every regular centroid
    ref = big[np.argmin(d_all, axis=1)]
    dist = d_all.min(axis=1)
    z = np.zeros(n)
    for c in big:
        z[ref == c] = robust_z(dist[ref == c], dist[cluster == c])
    tiny = tiny_cluster[cluster]
    gz = robust_z(np.linalg.norm(feats - np.median(feats, axis=0), axis=1))
    flagged = (z > cfg.kmeans_z) | (gz > cfg.global_z) | tiny
    return KMeansStage(k, cluster, dist, z, gz, tiny, flagged, sizes.tolist())


# ----------------------------------------------------------------------- 3. discriminator

def _discriminator(cfg: LNFSConfig):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    weight = "balanced" if cfg.disc_balanced else None
    if cfg.discriminator == "logistic":
        model = LogisticRegression(C=cfg.disc_c, class_weight=weight, max_iter=5000)
    elif cfg.discriminator == "mlp":  # sklearn's MLP has no class weights
        model = MLPClassifier((64,), alpha=1.0 / cfg.disc_c, max_iter=1000, random_state=cfg.seed)
    else:
        model = HistGradientBoostingClassifier(max_iter=200, l2_regularization=1.0 / cfg.disc_c,
                                               class_weight=weight, random_state=cfg.seed)
    return make_pipeline(StandardScaler(), model)


@dataclass
class DiscriminatorStage:
    score: np.ndarray  # [N] in [0, 1]
    trained: bool
    folds: int
    note: str


def discriminator_stage(features: np.ndarray, pseudo_noisy: np.ndarray, cfg: LNFSConfig,
                        rule_score: np.ndarray) -> DiscriminatorStage:
    """Cross-fitted noise scores from ``features`` ``[N, F]`` and pseudo-labels ``[N]`` (bool)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    n_noisy, n_clean = int(pseudo_noisy.sum()), int((~pseudo_noisy).sum())
    if n_noisy < cfg.min_pseudo_noisy or n_clean < cfg.min_pseudo_noisy:
        return DiscriminatorStage(rule_score, False, 0,
                                  f"discriminator skipped ({n_noisy} pseudo-noisy, "
                                  f"{n_clean} pseudo-clean; "
                                  f"needs {cfg.min_pseudo_noisy} of each): rule score used")
    folds = min(cfg.disc_folds, n_noisy, n_clean)
    cv = StratifiedKFold(folds, shuffle=True, random_state=cfg.seed)
    proba = cross_val_predict(_discriminator(cfg), features, pseudo_noisy.astype(int), cv=cv,
                              method="predict_proba")[:, 1]
    return DiscriminatorStage(proba, True, folds, f"{cfg.discriminator}, {folds}-fold cross-fitted")
