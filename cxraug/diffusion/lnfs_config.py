"""LNFS settings: :class:`LNFSConfig` (``--set lnfs.NAME=VALUE``) and :class:`FilterConfig`, what
``cxraug filter`` reads. The reasoning behind every default is in :mod:`cxraug.diffusion.lnfs`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cxraug.core.config import ConfigError


@dataclass
class LNFSConfig:
    """LNFS settings (``--set lnfs.NAME=VALUE``); see :mod:`cxraug.diffusion.lnfs` for the
    reasoning."""

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
