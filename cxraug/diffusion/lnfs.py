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

:class:`~cxraug.diffusion.lnfs_result.FilterResult` holds one row per image (``id, path, keep,
noise_score, kmeans_z, global_z, recon_z, stage, reason`` and the intermediate flags) and writes
the keep/drop CSV read by :func:`cxraug.diffusion.prepare.apply_filter`, a summary JSON (removed
overall, per deciding stage and per positive label) and a contact sheet of the dropped images,
noisiest first.

Modules: :mod:`~cxraug.diffusion.lnfs_config` (settings), :mod:`~cxraug.diffusion.lnfs_scores`
(features, K-means, discriminator), :mod:`~cxraug.diffusion.lnfs_manifold` (the manifold model),
:mod:`~cxraug.diffusion.lnfs_result` (outputs); this one runs the stages and finds the images.

``cxraug filter`` runs it on the training split of a run (its ``splits.csv``) or, for a run
without one, on every image of the dataset; ``apply_filter`` keeps images the CSV does not list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cxraug.core.errors import CxraugError, DataError
from cxraug.core.runs import RunDir
from cxraug.data.adapters import load_dataset, resolve_data
from cxraug.data.cache import cached_images
from cxraug.data.splits import load_splits
from cxraug.diffusion.lnfs_config import LNFSConfig
from cxraug.diffusion.lnfs_manifold import ManifoldStage, manifold_stage
from cxraug.diffusion.lnfs_result import FilterResult
from cxraug.diffusion.lnfs_scores import (
    DiscriminatorStage,
    KMeansStage,
    discriminator_stage,
    effective_k,
    kmeans_stage,
    latent_features,
    sigmoid,
    signed_log,
)
from cxraug.models.autoencoder import LatentSpace, cache_moments

Status = Callable[[str], None]


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
    say(f"stage 1/3: K-means (k={effective_k(cfg.k, n)})")
    km = kmeans_stage(feats.embed, cfg)
    say(f"stage 2/3: manifold model ({cfg.manifold}) on {int((~km.flagged).sum())} typical images")
    mf = manifold_stage(feats.x, ~km.flagged, cfg)
    pseudo = km.flagged | mf.flagged
    rz = np.abs(mf.z) if cfg.recon_two_sided else mf.z
    rule = np.maximum.reduce([sigmoid(km.z - cfg.kmeans_z), sigmoid(km.global_z - cfg.global_z),
                              sigmoid(rz - cfg.recon_z)])
    rule = np.where(km.tiny, 1.0, rule)
    say(f"stage 3/3: discriminator on {int(pseudo.sum())} pseudo-noisy / "
        f"{int((~pseudo).sum())} pseudo-clean")
    lo, hi = np.quantile(feats.embed, [cfg.disc_clip, 1 - cfg.disc_clip], axis=0)
    disc_x = np.column_stack([np.clip(feats.embed, lo, hi),
                              signed_log(np.column_stack([km.z, km.global_z, mf.z]))])
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


# ------------------------------------------------------------------ dataset-level helpers

def filter_candidates(data: str | Path | None, kind: str = "auto", run: str | Path | None = None,
                      missing: str = "error") -> tuple[Any, str]:
    """The images to filter: the train split of ``run/splits.csv`` if the run has one, else
    every image of the dataset. Returns ``(dataset, description)``. ``missing="keep"`` keeps
    rows whose file does not exist (``--skip-bad`` skips them with the unreadable images)."""
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
    images, ds, _ = cached_images(ds, space.image_size, skip_bad=skip_bad, progress=progress)
    key = hashlib.sha256(("|".join(ds.ids) + space.fingerprint()).encode()).hexdigest()[:16]
    moments = cache_moments(space, images, Path(cache_dir) / f"moments-{key}.npy", key=key,
                            batch_size=batch_size, progress=progress)
    with torch.no_grad():
        latents = space.mode(torch.from_numpy(np.array(moments, dtype=np.float32))).numpy()
    return latents, images, ds
