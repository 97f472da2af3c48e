"""The signal leak of a noise schedule whose terminal SNR is not zero, put back at sampling.

Training never noises a latent completely: with Stable Diffusion's scaled-linear betas the last
timestep keeps ``sqrt(abar_T) ~ 0.07`` of the clean latent, and the denoiser learns to read the
image's coarse layout (overall brightness, contrast, where the lungs are) from that leak. The
sampler's start ``N(0, I)`` carries none, so the generated images regress to a grey middle: too
little power at the lowest frequencies, blacks not deep enough (Everaert et al., "Exploiting the
signal-leak bias in diffusion models", WACV 2024). The fix needs no training: start from

    x_T = sqrt(abar_T) z_leak + sqrt(1 - abar_T) eps,    z_leak ~ N(mu, B B^T + diag(r^2))

a Gaussian fitted to the training split's latents (mean ``mu``, the top ``K`` principal axes
``B`` scaled by their standard deviations, and the residual variance ``r^2`` of each element), so
``x_T`` has the second-order statistics of the training ``x_T``. With zero terminal SNR
(``abar_T = 0``) it changes nothing.

    leak = SignalLeak.fit(latents)                        # [N, C, h, w], the training split's
    leak.save(run.denoiser / LEAK_NAME); leak = SignalLeak.load(...)
    x_T = leak.start(noise, seeds, abar_T)                # one Gaussian draw per image seed

A Gaussian of ``K`` principal axes copies no training image (``K`` is far below the number of
images); the memorisation gate of ``cxraug synth`` checks the cohorts as before.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from cxraug.core.artifacts import load_tables
from cxraug.core.errors import WeightsError
from cxraug.core.seeds import stable_seed

#: The file in a run's (or export's) ``denoiser/`` folder.
LEAK_NAME = "signal_leak.safetensors"


class SignalLeak:
    """A Gaussian over latents ``[C, h, w]``: ``mean + basis^T a + residual_std * n``, with
    ``a ~ N(0, I_K)`` and ``n ~ N(0, I)``; ``info``: what it was fitted on (saved with it)."""

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, residual_std: torch.Tensor,
                 info: dict | None = None):
        if basis.shape[1:] != mean.shape or residual_std.shape != mean.shape:
            raise ValueError(f"signal leak: basis {tuple(basis.shape)} and residual "
                             f"{tuple(residual_std.shape)} do not match mean {tuple(mean.shape)}")
        self.mean, self.basis, self.residual_std = mean.float(), basis.float(), residual_std.float()
        self.info = dict(info or {})

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.mean.shape)

    @classmethod
    def fit(cls, latents: torch.Tensor, components: int = 64, info: dict | None = None) -> SignalLeak:
        """Mean, top-``components`` principal axes and residual variance of ``latents``
        ``[N, C, h, w]`` (the scaled latents the denoiser trains on)."""
        n = latents.shape[0]
        if n < 2:
            raise ValueError("signal leak: fitting needs at least 2 latents")
        x = latents.reshape(n, -1).double()
        mean = x.mean(0)
        xc = x - mean
        k = min(components, n - 1, x.shape[1])
        _, s, vh = torch.linalg.svd(xc, full_matrices=False)
        basis = (s[:k, None] / math.sqrt(n - 1)) * vh[:k]            # [K, D]
        residual = (xc.var(0) - basis.pow(2).sum(0)).clamp_min(0)
        shape = latents.shape[1:]
        explained = float(s[:k].pow(2).sum() / s.pow(2).sum())
        meta = {"n_latents": n, "components": k, "explained_variance": round(explained, 4)}
        return cls(mean.view(shape), basis.view(k, *shape), residual.sqrt().view(shape),
                   meta | dict(info or {}))

    def draw(self, seeds: Sequence[int]) -> torch.Tensor:
        """``[len(seeds), C, h, w]``: one draw per image seed, from its own generator (a stream
        apart from the image's initial noise), so an image never depends on its batch."""
        rows = []
        for s in seeds:
            g = torch.Generator().manual_seed(stable_seed(int(s), "signal_leak"))
            a = torch.randn(self.basis.shape[0], generator=g)
            n = torch.randn(self.shape, generator=g)
            rows.append(self.mean + torch.tensordot(a, self.basis, dims=1) + self.residual_std * n)
        return torch.stack(rows)

    def start(self, noise: torch.Tensor, seeds: Sequence[int], abar: float) -> torch.Tensor:
        """The sampler's start at a timestep with ``alphas_cumprod`` ``abar``: the leak mixed into
        ``noise`` ``[B, C, h, w]`` as the forward process would have mixed a training latent."""
        if tuple(noise.shape[1:]) != self.shape:
            raise WeightsError(f"signal leak fitted to latents {self.shape}, the model's are "
                               f"{tuple(noise.shape[1:])}: refit it (cxraug train --stage 1)")
        z = self.draw(seeds).to(noise.device, noise.dtype)
        return math.sqrt(abar) * z + math.sqrt(1.0 - abar) * noise

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        save_file({"mean": self.mean.contiguous(), "basis": self.basis.contiguous(),
                   "residual_std": self.residual_std.contiguous()}, str(path),
                  metadata={"info": json.dumps(self.info, sort_keys=True)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> SignalLeak:
        """Read a saved leak (safetensors: no code runs); a damaged file is one line naming it."""
        t, meta = load_tables(path, "fit it with cxraug train --stage 1 --from RUN, or set "
                              "sample.signal_leak: false in the model's config.yaml")
        try:
            return cls(t["mean"], t["basis"], t["residual_std"], json.loads(meta.get("info", "{}")))
        except (KeyError, ValueError) as e:
            raise WeightsError(f"{path}: not a signal-leak file ({e}); refit it with "
                               "cxraug train --stage 1 --from RUN") from None
