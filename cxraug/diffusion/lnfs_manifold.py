"""LNFS stage 2: a manifold model (MLP autoencoder or PCA subspace) of the typical latents and
the out-of-fold reconstruction error of every image; see :mod:`cxraug.diffusion.lnfs`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cxraug.core.errors import DataError
from cxraug.diffusion.lnfs_config import LNFSConfig
from cxraug.diffusion.lnfs_scores import robust_z

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
