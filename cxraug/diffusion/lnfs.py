"""LNFS, Diff-CXR's latent noise filtering strategy: drop atypical training images before the
denoiser sees them, coarse to fine, and say what was removed and why.

The paper names three steps (K-means finds typical data, a manifold model captures the structure
of normal data, a discriminator trained on the resulting pseudo-labels makes the final call) and
gives no details. This is cxraug's design; every number is a field of :class:`LNFSConfig`.

0. **Features.** The posterior mean of each image's latent (``LatentSpace.mode``: deterministic,
   free of the VAE's posterior noise), flattened to ``[N, D]`` and standardised per dimension.
   The *embedding* used by K-means and the discriminator is the first ``pca_components`` PCA
   coordinates next to ``latent_stats``: per latent channel the mean, std and mean absolute
   horizontal / vertical difference, whitened jointly (Mahalanobis). PCA keeps content and
   layout; the statistics keep brightness, contrast and sharpness, which PCA drops.
1. **K-means (coarse).** ``k`` clusters (seeded, ``kmeans_n_init`` restarts; at most one per 20
   images, since tiny data cannot tell a rare mode from chance). A cluster with fewer than
   ``min_cluster_share`` x N / k images is *tiny*: all its members are atypical (a coherent
   group of something rare, such as a corrupted batch). Every image's distance to the nearest
   regular centroid becomes a robust z-score against that cluster's members,
   ``(d - median) / (1.4826 MAD)``; above ``kmeans_z`` is atypical (3.5 = Iglewicz & Hoaglin's
   cut-off for modified z-scores). Within-cluster z-scores cannot see a corrupted group that
   forms a cluster of its own, so the distance to the median of all images is z-scored too and
   flagged above ``global_z`` (5: the whole dataset's spread includes its legitimate modes, so a
   looser cut-off than within a cluster).
2. **Manifold (fine).** A small MLP autoencoder (``manifold="autoencoder"``; or a linear PCA
   subspace, ``"pca"``) of the standardised latents, fitted on the images stage 1 found typical.
   Those are scored out of fold (``manifold_folds``), so their errors are not optimistically low
   next to the atypical images', which no model saw. The log of the mean squared reconstruction
   error is robust-z-scored against the typical images' and flagged beyond ``recon_z``; with
   ``recon_two_sided`` also far *below* (blurred or blank images are easier to reconstruct than
   any real radiograph).
3. **Discriminator (final call).** Pseudo-labels: noisy = flagged by stage 1 or 2, clean = the
   rest. Features: the embedding winsorised at the ``disc_clip`` quantiles (a linear model must
   not extrapolate from one extreme coordinate) plus the three z-scores as
   ``sign(z) log(1 + |z|)``. A logistic regression (or ``mlp`` / ``gbm``) is cross-fitted over
   ``disc_folds`` stratified folds, so every image's noise score comes from a model that never
   saw its pseudo-label: a rule flag on an image that resembles the clean ones can be overruled,
   and an unflagged image that resembles the flagged ones can be caught. Unweighted classes
   (``disc_balanced=False``) make the score an estimate of P(noisy | features); an image is
   dropped when it exceeds ``score_threshold`` = 0.5, i.e. when noisy is the likelier label.
   With fewer than ``min_pseudo_noisy`` pseudo-noisy images there is nothing to learn from: the
   score is then the rule score, ``max sigmoid(z - cut-off)`` over the rules (1 for tiny
   clusters), so that "score > 0.5" means "flagged by a rule".
4. **Cap.** At most ``max_drop_frac`` of the images are dropped (highest scores first): a
   filter that wants a fifth of a curated dataset gone is more likely miscalibrated than right.

How the defaults were chosen (``benchmarks/lnfs_planted.py``): K-means, z cut-offs and the
decision rule from the principles above; the choices between alternatives (latent statistics,
two-sided reconstruction test, PCA size, winsorising, unweighted classes) on a *dev* set of
planted corruptions (blur, overexposure, zoom-out, scanlines, pixelation, half-black). The
tiny-cluster size and the global z-score were revised after held-out runs showed coherent groups
of corrupted images getting a K-means cluster of their own; the final design was then scored
once on corruption types it had never met: precision 0.59, recall 0.29, 1.1% of clean images
dropped. LNFS finds gross layout / content / exposure errors, not texture damage. All numbers,
including the misses, are in ``benchmarks/results/lnfs_planted*.json``.

What LNFS cannot do: see what the latent space does not encode. A small VAE is a low-pass
filter, so pixel noise, JPEG blocking or scanlines vanish in its latents (its decoder returns a
clean-looking image, so the latent diffusion model hardly sees them either); catch those with an
image-space check if they matter.

:class:`FilterResult` holds one row per image (``id, path, keep, noise_score, kmeans_z,
global_z, recon_z, stage, reason`` and the intermediate flags) and writes the keep/drop CSV read
by :func:`cxraug.diffusion.prepare.apply_filter`, a summary JSON (removed overall, per deciding
stage and per positive label) and a contact sheet of the dropped images, noisiest first.

``cxraug filter`` runs it on the training split of a run (its ``splits.csv``) or, for a run
without one, on every image of the dataset; ``apply_filter`` keeps images the CSV does not list.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from cxraug.core import config as C
from cxraug.core.config import ConfigError
from cxraug.core.errors import DataError
from cxraug.data import labels as L

STAGES = ("kmeans", "manifold", "discriminator", "kept")
_SHORT = {"kmeans": "km", "manifold": "mf", "discriminator": "dc", "kept": ""}
Status = Callable[[str], None]


@dataclass
class LNFSConfig:
    """LNFS settings (``--set lnfs.NAME=VALUE``); see the module docstring for the reasoning."""

    seed: int = 0
    # 0. features
    standardize: bool = True
    pca_components: int = 16
    latent_stats: bool = True
    # 1. K-means
    k: int = 8
    kmeans_n_init: int = 10
    kmeans_z: float = 3.5
    global_z: float = 5.0
    min_cluster_share: float = 0.25
    # 2. manifold model
    manifold: Literal["autoencoder", "pca"] = "autoencoder"
    manifold_dim: int = 32
    manifold_hidden: int = 128
    manifold_steps: int = 300
    manifold_lr: float = 1e-3
    manifold_batch: int = 128
    manifold_folds: int = 3
    recon_z: float = 3.5
    recon_two_sided: bool = True
    # 3. discriminator
    discriminator: Literal["logistic", "mlp", "gbm"] = "logistic"
    disc_folds: int = 5
    disc_c: float = 1.0
    disc_balanced: bool = False
    disc_clip: float = 0.01
    min_pseudo_noisy: int = 5
    score_threshold: float = 0.5
    # 4. cap and outputs
    max_drop_frac: float = 0.2
    sheet_max: int = 64

    def validate(self) -> None:
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"lnfs.{name} {getattr(self, name)!r}: {what}")

        need(self.pca_components >= 0, "pca_components", "must be >= 0 (0 = no PCA)")
        need(self.k >= 1, "k", "must be a positive number of clusters, e.g. 8")
        need(self.kmeans_n_init >= 1, "kmeans_n_init", "must be >= 1")
        need(self.kmeans_z > 0, "kmeans_z", "must be a positive robust z cut-off, e.g. 3.5")
        need(self.global_z > 0, "global_z", "must be a positive robust z cut-off, e.g. 5 "
             "(1e9 = off)")
        need(0 <= self.min_cluster_share < 1, "min_cluster_share", "must be in [0, 1), e.g. 0.25")
        need(self.manifold_dim >= 1, "manifold_dim", "must be >= 1")
        need(self.manifold_hidden >= 1, "manifold_hidden", "must be >= 1")
        need(self.manifold_steps >= 1, "manifold_steps", "must be >= 1")
        need(self.manifold_lr > 0, "manifold_lr", "must be > 0")
        need(self.manifold_batch >= 1, "manifold_batch", "must be >= 1")
        need(self.manifold_folds >= 1, "manifold_folds", "must be >= 1 (1 = no cross-fitting)")
        need(self.recon_z > 0, "recon_z", "must be a positive robust z cut-off, e.g. 3.5")
        need(self.disc_folds >= 2, "disc_folds", "must be >= 2 (scores are out of fold)")
        need(self.disc_c > 0, "disc_c", "must be > 0")
        need(0 <= self.disc_clip < 0.5, "disc_clip", "must be in [0, 0.5), e.g. 0.01")
        need(self.min_pseudo_noisy >= 2, "min_pseudo_noisy", "must be >= 2")
        need(0 < self.score_threshold < 1, "score_threshold", "must be in (0, 1), e.g. 0.5")
        need(0 <= self.max_drop_frac <= 1, "max_drop_frac", "must be in [0, 1]")
        need(self.sheet_max >= 1, "sheet_max", "must be >= 1")


@dataclass
class FilterConfig:
    """What ``cxraug filter`` reads: the LNFS settings live under ``lnfs.``."""

    lnfs: LNFSConfig = field(default_factory=LNFSConfig)


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


def _signed_log(z: np.ndarray) -> np.ndarray:
    return np.sign(z) * np.log1p(np.abs(z))


def _sigmoid(x: np.ndarray) -> np.ndarray:
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


def _effective_k(k: int, n: int) -> int:
    """At most one cluster per 20 images: fewer cannot tell a rare mode from chance."""
    return max(1, min(k, n // 20))


def kmeans_stage(feats: np.ndarray, cfg: LNFSConfig) -> KMeansStage:
    """Cluster ``[N, P]`` features; flag far-from-centroid images and tiny clusters.

    Distances and z-scores are taken to the nearest cluster that is not tiny (for members of
    a regular cluster that is their own), so a tiny cluster's members also get a large z.
    """
    from sklearn.cluster import KMeans

    n = len(feats)
    k = _effective_k(cfg.k, n)
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


# --------------------------------------------------------------------------- 2. manifold

class LatentAutoencoder(nn.Module):
    """MLP ``D -> hidden -> dim -> hidden -> D`` on standardised flattened latents."""

    def __init__(self, d: int, hidden: int, dim: int):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.decoder = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _autoencoder_errors(train: np.ndarray, test: np.ndarray, cfg: LNFSConfig,
                        seed: int) -> np.ndarray:
    """Fit on ``train`` rows, return mean squared reconstruction error of ``test`` rows."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a ~0.1M-parameter MLP only loses to thread sync, badly on busy cores
    try:
        return _fit_autoencoder(train, test, cfg, seed)
    finally:
        torch.set_num_threads(threads)


def _fit_autoencoder(train: np.ndarray, test: np.ndarray, cfg: LNFSConfig, seed: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LatentAutoencoder(train.shape[1], cfg.manifold_hidden, cfg.manifold_dim)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.manifold_lr, weight_decay=1e-4)
    xt = torch.as_tensor(train, dtype=torch.float32)
    for _ in range(cfg.manifold_steps):
        idx = torch.randint(0, len(xt), (min(cfg.manifold_batch, len(xt)),), generator=gen)
        loss = nn.functional.mse_loss(model(xt[idx]), xt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        xs = torch.as_tensor(test, dtype=torch.float32)
        return ((model(xs) - xs) ** 2).mean(1).double().numpy()


def _pca_errors(train: np.ndarray, test: np.ndarray, cfg: LNFSConfig, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    pca = PCA(n_components=min(cfg.manifold_dim, len(train) - 1, train.shape[1]),
              random_state=seed).fit(train)
    recon = pca.inverse_transform(pca.transform(test))
    return ((recon - test) ** 2).mean(1)


MANIFOLDS: dict[str, Callable[[np.ndarray, np.ndarray, LNFSConfig, int], np.ndarray]] = {
    "autoencoder": _autoencoder_errors, "pca": _pca_errors}


@dataclass
class ManifoldStage:
    error: np.ndarray  # [N] mean squared reconstruction error
    z: np.ndarray  # [N] robust z of log error vs the typical images
    flagged: np.ndarray  # [N] bool


def manifold_stage(x: np.ndarray, typical: np.ndarray, cfg: LNFSConfig) -> ManifoldStage:
    """Reconstruction error of every row of ``x`` ``[N, D]`` under a model of the typical rows.

    Typical rows are scored by the fold model that did not train on them; the other rows by
    the mean of the fold models' errors.
    """
    from sklearn.model_selection import KFold

    fit = MANIFOLDS[cfg.manifold]
    n = len(x)
    typ = np.flatnonzero(typical)
    if len(typ) < 4:
        raise DataError(f"LNFS: only {len(typ)} typical images after K-means; the manifold model "
                        "needs at least 4 (lower lnfs.k or raise lnfs.kmeans_z)")
    err = np.zeros(n)
    other = np.flatnonzero(~typical)
    folds = min(cfg.manifold_folds, len(typ) // 2)
    if folds < 2:
        err[typ] = fit(x[typ], x[typ], cfg, cfg.seed)
        if len(other):
            err[other] = fit(x[typ], x[other], cfg, cfg.seed)
    else:
        splitter = KFold(folds, shuffle=True, random_state=cfg.seed)
        for f, (tr, te) in enumerate(splitter.split(typ)):
            rows = np.concatenate([typ[te], other])
            e = fit(x[typ[tr]], x[rows], cfg, cfg.seed + 1 + f)
            err[typ[te]] = e[:len(te)]
            err[other] += e[len(te):] / folds
    log_err = np.log(np.maximum(err, 1e-12))
    z = robust_z(log_err, log_err[typ])
    return ManifoldStage(err, z, (np.abs(z) if cfg.recon_two_sided else z) > cfg.recon_z)


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


# ------------------------------------------------------------------------------- pipeline

def run_lnfs(latents: np.ndarray, cfg: LNFSConfig, ids: list[str] | None = None,
             paths: list[str] | None = None, status: Status | None = None) -> FilterResult:
    """Run the three stages on latents ``[N, C, h, w]`` (posterior means) and decide per image."""
    say = status or (lambda _msg: None)
    n = len(latents)
    if n < 10:
        raise DataError(f"LNFS needs at least 10 images to tell typical from atypical; got {n}")
    ids = [str(i) for i in (ids if ids is not None else range(n))]
    if len(ids) != n or (paths is not None and len(paths) != n):
        raise ValueError(f"ids/paths must have one entry per latent ({n})")

    say(f"features: {n} latents")
    feats = latent_features(latents, cfg)
    say(f"stage 1/3: K-means (k={_effective_k(cfg.k, n)})")
    km = kmeans_stage(feats.embed, cfg)
    say(f"stage 2/3: manifold model ({cfg.manifold}) on {int((~km.flagged).sum())} typical images")
    mf = manifold_stage(feats.x, ~km.flagged, cfg)
    pseudo = km.flagged | mf.flagged
    rz = np.abs(mf.z) if cfg.recon_two_sided else mf.z
    rule = np.maximum.reduce([_sigmoid(km.z - cfg.kmeans_z), _sigmoid(km.global_z - cfg.global_z),
                              _sigmoid(rz - cfg.recon_z)])
    rule = np.where(km.tiny, 1.0, rule)
    say(f"stage 3/3: discriminator on {int(pseudo.sum())} pseudo-noisy / "
        f"{int((~pseudo).sum())} pseudo-clean")
    lo, hi = np.quantile(feats.embed, [cfg.disc_clip, 1 - cfg.disc_clip], axis=0)
    disc_x = np.column_stack([np.clip(feats.embed, lo, hi),
                              _signed_log(np.column_stack([km.z, km.global_z, mf.z]))])
    dc = discriminator_stage(disc_x, pseudo, cfg, rule)

    # 4. Decide, then cap the number dropped (highest scores first).
    drop = dc.score > cfg.score_threshold
    cap = int(np.floor(cfg.max_drop_frac * n))
    capped = np.zeros(n, dtype=bool)
    if drop.sum() > cap:
        order = np.argsort(-np.where(drop, dc.score, -np.inf), kind="stable")
        capped[order[cap:int(drop.sum())]] = True
        drop &= ~capped
    stage, reason = _explain(km, mf, dc, drop, capped, cfg, n)
    table = pd.DataFrame({
        "id": ids, "path": list(paths) if paths is not None else [""] * n, "keep": ~drop,
        "noise_score": dc.score.astype(float), "kmeans_z": km.z, "global_z": km.global_z,
        "recon_z": mf.z,
        "stage": stage, "reason": reason, "cluster": km.cluster,
        "cluster_size": np.asarray(km.sizes)[km.cluster], "kmeans_flag": km.flagged,
        "manifold_flag": mf.flagged, "pseudo_noisy": pseudo, "recon_error": mf.error})
    info = {"n": n, "latent_dim": int(feats.x.shape[1]), "pca_components": feats.n_pca,
            "latent_statistics": feats.n_stats,
            "k": km.k, "cluster_sizes": km.sizes, "kmeans_flagged": int(km.flagged.sum()),
            "tiny_cluster_images": int(km.tiny.sum()), "manifold_flagged": int(mf.flagged.sum()),
            "pseudo_noisy": int(pseudo.sum()), "discriminator": dc.note,
            "discriminator_trained": dc.trained, "capped": int(capped.sum()),
            "dropped": int(drop.sum())}
    if dc.trained:
        from sklearn.metrics import roc_auc_score

        info["discriminator_oof_auc_vs_pseudo_labels"] = float(roc_auc_score(pseudo, dc.score))
    say(f"done: {int(drop.sum())} of {n} images dropped")
    return FilterResult(table, cfg, info)


def _explain(km: KMeansStage, mf: ManifoldStage, dc: DiscriminatorStage, drop: np.ndarray,
             capped: np.ndarray, cfg: LNFSConfig, n: int) -> tuple[list[str], list[str]]:
    """The deciding stage and a one-line reason per image."""
    stages, reasons = [], []
    judge = "discriminator" if dc.trained else "rule score"
    for i in range(n):
        s = f"{judge} {dc.score[i]:.2f}"
        if km.tiny[i]:
            why, first = (f"in a tiny K-means cluster ({km.sizes[km.cluster[i]]} images < "
                          f"{cfg.min_cluster_share:g} x {n}/{km.k})"), "kmeans"
        elif km.z[i] > cfg.kmeans_z:
            why = f"far from its K-means centroid (z {km.z[i]:.1f} > {cfg.kmeans_z:g})"
            first = "kmeans"
        elif km.global_z[i] > cfg.global_z:
            why, first = (f"far from the bulk of the data (global z {km.global_z[i]:.1f} > "
                          f"{cfg.global_z:g})"), "kmeans"
        elif mf.flagged[i] and mf.z[i] > 0:
            why = f"off the typical-latent manifold (recon z {mf.z[i]:.1f} > {cfg.recon_z:g})"
            first = "manifold"
        elif mf.flagged[i]:
            why, first = (f"unusually easy to reconstruct, e.g. blurred or blank "
                          f"(recon z {mf.z[i]:.1f} < -{cfg.recon_z:g})"), "manifold"
        else:
            why, first = "", "discriminator"
        if drop[i]:
            stages.append(first)
            reasons.append(f"{why}; {s} > {cfg.score_threshold:g}" if why else
                           f"resembles the flagged images: {s} > {cfg.score_threshold:g}")
        else:
            stages.append("kept")
            if capped[i]:
                reasons.append(f"{s} > {cfg.score_threshold:g} but over the max_drop_frac "
                               f"{cfg.max_drop_frac:g} cap")
            elif why:
                reasons.append(f"{why}, but {s} <= {cfg.score_threshold:g}")
            else:
                reasons.append("typical")
    return stages, reasons


# -------------------------------------------------------------------------------- results

@dataclass
class FilterResult:
    """One row per image, aligned with the latents given to :func:`run_lnfs`.

    ``table`` columns: ``id, path, keep, noise_score`` (in [0, 1]), ``kmeans_z, global_z,
    recon_z, stage`` (the stage that decided a drop: kmeans / manifold / discriminator; ``kept``
    otherwise), ``reason``, then ``cluster, cluster_size, kmeans_flag, manifold_flag,
    pseudo_noisy, recon_error``. ``info`` holds run-level facts (k, cluster sizes, counts).
    """

    table: pd.DataFrame
    config: LNFSConfig
    info: dict[str, Any]

    @property
    def keep(self) -> np.ndarray:
        return self.table["keep"].to_numpy(dtype=bool)

    def write_csv(self, path: str | Path) -> Path:
        """The keep/drop list: ``id, keep (1/0), noise_score, stage, reason``."""
        path = Path(path)
        df = self.table[["id", "keep", "noise_score", "stage", "reason"]].copy()
        df["keep"] = df["keep"].astype(int)
        df["noise_score"] = df["noise_score"].round(4)
        df.to_csv(path, index=False)
        return path

    def summary(self, labels: np.ndarray | None = None) -> dict[str, Any]:
        """Removal counts overall, per deciding stage and per positive label (raw ``[N, 14]``)."""
        t = self.table
        dropped = ~self.keep

        def counts(mask: np.ndarray) -> dict[str, Any]:
            d = int((dropped & mask).sum())
            out = {"images": int(mask.sum()), "dropped": d,
                   "dropped_frac": round(d / max(1, int(mask.sum())), 4)}
            out.update({s: int(((t["stage"] == s).to_numpy() & mask).sum()) for s in STAGES[:3]})
            return out

        out = {"overall": counts(np.ones(len(t), dtype=bool)), "info": self.info,
               "config": C.to_dict(self.config), "per_label": {}}
        if labels is not None:
            pos = np.asarray(labels) == L.POSITIVE
            for j, name in enumerate(L.OBSERVATIONS):
                if pos[:, j].any():
                    out["per_label"][name] = counts(pos[:, j])
            if (~pos.any(1)).any():
                out["per_label"]["(no positive label)"] = counts(~pos.any(1))
        top = t[dropped].sort_values("noise_score", ascending=False, kind="stable").head(20)
        out["top_dropped"] = [{"id": r.id, "noise_score": round(float(r.noise_score), 4),
                               "stage": r.stage, "reason": r.reason} for r in top.itertuples()]
        return out

    def write_summary(self, path: str | Path, labels: np.ndarray | None = None) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.summary(labels), indent=2) + "\n")
        return path

    def write_contact_sheet(self, images: np.ndarray, path: str | Path, thumb: int = 64,
                            columns: int = 8) -> Path:
        """A grid of the dropped images (``images``: ``uint8 [N, H, W]``, row-aligned), noisiest
        first, at most ``config.sheet_max``, each captioned with its score and deciding stage
        (``km`` K-means, ``mf`` manifold, ``dc`` discriminator)."""
        from PIL import Image, ImageDraw

        path = Path(path)
        t = self.table.reset_index(drop=True)
        rows = t[~self.keep].sort_values("noise_score", ascending=False, kind="stable")
        rows = rows.head(self.config.sheet_max)
        caption = 12
        if rows.empty:
            sheet = Image.new("L", (thumb * 3, thumb // 2), 0)
            ImageDraw.Draw(sheet).text((4, 4), "LNFS: no images dropped", fill=255)
            sheet.save(path)
            return path
        cols = min(columns, len(rows))
        nrow = -(-len(rows) // cols)
        sheet = Image.new("L", (cols * thumb, nrow * (thumb + caption)), 0)
        draw = ImageDraw.Draw(sheet)
        for k, (i, r) in enumerate(rows.iterrows()):
            x, y = (k % cols) * thumb, (k // cols) * (thumb + caption)
            tile = Image.fromarray(np.asarray(images[i], dtype=np.uint8)).resize((thumb, thumb))
            sheet.paste(tile, (x, y))
            draw.text((x + 2, y + thumb), f"{r.noise_score:.2f} {_SHORT[r.stage]}", fill=255)
        sheet.save(path)
        return path

    def save(self, out: str | Path, labels: np.ndarray | None = None,
             images: np.ndarray | None = None) -> dict[str, Path]:
        """Write ``keep.csv``, ``summary.json`` and (given images) ``dropped.png`` into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        files = {"csv": self.write_csv(out / "keep.csv"),
                 "summary": self.write_summary(out / "summary.json", labels)}
        if images is not None:
            files["sheet"] = self.write_contact_sheet(images, out / "dropped.png")
        return files


# ------------------------------------------------------------------ dataset-level helpers

def filter_candidates(data: str | Path | None, kind: str = "auto", run: str | Path | None = None,
                      missing: str = "error") -> tuple[Any, str]:
    """The images to filter: the train split of ``run/splits.csv`` if the run has one, else
    every image of the dataset. Returns ``(dataset, description)``. ``missing="keep"`` keeps
    rows whose file does not exist (``--skip-bad`` skips them with the unreadable images)."""
    from cxraug.core.runs import RunDir
    from cxraug.data.adapters import load_dataset, resolve_data
    from cxraug.data.splits import load_splits

    ds = load_dataset(resolve_data(data), kind, missing=missing)
    splits = RunDir(run).splits if run is not None else None
    if splits is not None and splits.is_file():
        train = load_splits(ds, splits).where_split("train")
        return train, f"train split of {splits} ({len(train)} of {len(ds)} images)"
    return ds, f"all {len(ds)} images of {ds.name} (no splits.csv in the run)"


def open_latent_space(run: str | Path | None = None, vae: str | Path | None = None,
                      image_size: int | None = None):
    """``vae`` or ``run/vae`` as a :class:`~cxraug.models.autoencoder.LatentSpace`, optionally
    at another ``image_size`` (must be divisible by its downsampling factor)."""
    from cxraug.core.errors import CxraugError
    from cxraug.core.runs import RunDir
    from cxraug.models.autoencoder import LatentSpace

    if vae is None and run is None:
        raise CxraugError("give --model RUN (a run folder with vae/) or --vae FOLDER")
    folder = Path(vae) if vae is not None else RunDir(run).vae
    if not folder.is_dir():
        raise CxraugError(f"{folder}: latent-space folder not found; train one with "
                          "`cxraug train vae --out RUN` or pass --vae FOLDER")
    space = LatentSpace.load(folder)
    if image_size and image_size != space.image_size:
        space = LatentSpace(space.vae, image_size, space.scale_factor, space.source,
                            space.subfolder).freeze()
    return space


def encode_dataset(ds, space, cache_dir: str | Path, batch_size: int = 16, skip_bad: bool = False,
                   progress: bool = True) -> tuple[np.ndarray, np.ndarray, Any]:
    """Cache images at the latent space's size and their moments in ``cache_dir``.

    Returns ``(latents float32 [N, C, h, w] posterior means, images uint8 [N, S, S], dataset)``
    with unreadable images left out when ``skip_bad``.
    """
    from cxraug.data.cache import cached_images
    from cxraug.models.autoencoder import cache_moments

    images, ds, _ = cached_images(ds, space.image_size, skip_bad=skip_bad, progress=progress)
    key = hashlib.sha256(("|".join(ds.ids) + space.fingerprint()).encode()).hexdigest()[:16]
    moments = cache_moments(space, images, Path(cache_dir) / f"moments-{key}.npy", key=key,
                            batch_size=batch_size, progress=progress)
    with torch.no_grad():
        latents = space.mode(torch.from_numpy(np.array(moments, dtype=np.float32))).numpy()
    return latents, images, ds
