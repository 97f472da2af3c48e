"""The denoising loss of Diff-CXR training, as one object (in the style of EDM's
``training/loss.py``, Karras et al. 2022).

    loss_fn = DiffusionLoss(scheduler_for(tcfg), null, cond_drop=0.1, snr_gamma=0.0)
    per_sample = loss_fn(net, z, cond, generator)     # [B]; the loop takes .mean()

For clean latents ``z`` ``[B, C, h, w]`` and their condition ``c`` (report context, and the DKIM
hint in stage 2), every sample ``i`` draws

    t_i ~ U{0, ..., T-1},  eps_i ~ N(0, I),  drop_i ~ Bernoulli(cond_drop)
    c_i <- null where drop_i                  (report and hint together: classifier-free guidance)
    c_i.context <- null where alone_i ~ Bernoulli(report_drop)     (only when report_drop > 0)
    eps_i <- eps_i + noise_offset * o_i,  o_i ~ N(0, 1) per channel   (only when noise_offset > 0)
    x_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps                      (the DDPM forward process)

and its loss is ``w(t) * mean((net(x_t, t, c) - target)^2)`` with the target of the schedule's
prediction type, ``eps`` (``epsilon``) or ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) z``
(``v_prediction``), and ``w(t)`` = 1, Min-SNR-gamma or truncated SNR (see
:func:`loss_target_and_weight`).
``net`` is any :class:`~cxraug.diffusion.denoiser.Denoiser`: the U-ViT and the adapter-steered
U-ViT are called the same way.

Reproducibility: every draw comes from ``generator`` (a CPU generator, so CPU and GPU runs draw
the same numbers), in the order t, eps, drop[, alone][, offset]; the ``alone`` mask is drawn only when
``report_drop > 0`` and the offset only when ``noise_offset > 0``, so runs without them continue
exactly from their older checkpoints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from cxraug.diffusion.denoiser import Condition
from cxraug.diffusion.sampling import scheduler_for


def loss_target_and_weight(scheduler: DDPMScheduler, z: torch.Tensor, eps: torch.Tensor,
                           t: torch.Tensor, snr_gamma: float = 0.0,
                           truncated_snr: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The regression target of the scheduler's prediction type (epsilon or v) and per-sample
    loss weights ``[B]``: ones, Min-SNR-gamma (``min(snr, g) / snr`` for epsilon,
    ``min(snr, g) / (snr + 1)`` for v) or truncated SNR (``max(snr, 1)`` in place of
    ``min(snr, g)``)."""
    a = scheduler.alphas_cumprod.to(z.device)[t].view(-1, 1, 1, 1)
    if scheduler.config.prediction_type == "v_prediction":
        target = a.sqrt() * eps - (1 - a).sqrt() * z
    else:
        target = eps
    if snr_gamma <= 0 and not truncated_snr:
        return target, torch.ones(len(t), device=z.device)
    snr = (a / (1 - a).clamp_min(1e-12)).flatten()
    if truncated_snr:  # the x0 error's weight (the numerator below), Salimans & Ho 2022
        clipped = snr.clamp_min(1.0)
    else:
        clipped = torch.minimum(snr, torch.full_like(snr, snr_gamma))
    if scheduler.config.prediction_type == "v_prediction":
        return target, clipped / (snr + 1)
    return target, clipped / snr.clamp_min(1e-12)


class DiffusionLoss:
    """Per-sample denoising loss (see the module docstring for the formula).

    ``scheduler``: the training noise schedule (``num_train_timesteps``, ``alphas_cumprod`` and
    the prediction type); ``null``: the null condition ``[K, D]`` fields, on the device of the
    batches; ``cond_drop``: probability of replacing a sample's condition by ``null``;
    ``report_drop``: probability of replacing its report context alone (stage 2; 0 = off);
    ``snr_gamma``: Min-SNR-gamma weighting (0 = uniform); ``truncated_snr``: truncated-SNR
    weighting instead; ``noise_offset``: offset noise, a
    per-sample, per-channel constant ``noise_offset * N(0, 1)`` added to ``eps`` (0 = off).
    """

    def __init__(self, scheduler: DDPMScheduler, null: Condition, cond_drop: float = 0.1,
                 report_drop: float = 0.0, snr_gamma: float = 0.0, noise_offset: float = 0.0,
                 truncated_snr: bool = False):
        self.scheduler, self.null = scheduler, null
        self.cond_drop, self.report_drop, self.snr_gamma = cond_drop, report_drop, snr_gamma
        self.noise_offset, self.truncated_snr = noise_offset, truncated_snr
        self._alphas: dict[torch.device, torch.Tensor] = {}

    @classmethod
    def from_config(cls, tcfg, null: Condition) -> DiffusionLoss:
        """The loss a :class:`~cxraug.diffusion.config.TrainConfig` describes."""

        return cls(scheduler_for(tcfg), null, tcfg.cond_drop, tcfg.report_drop, tcfg.snr_gamma,
                   tcfg.noise_offset, tcfg.truncated_snr)

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.prediction_type

    @property
    def num_timesteps(self) -> int:
        return self.scheduler.config.num_train_timesteps

    def alphas(self, device: torch.device) -> torch.Tensor:
        """``alphas_cumprod`` on ``device`` (copied there once)."""
        if device not in self._alphas:
            self._alphas[device] = self.scheduler.alphas_cumprod.to(device)
        return self._alphas[device]

    def __call__(self, net: Callable[..., torch.Tensor], z: torch.Tensor, cond: Condition,
                 generator: torch.Generator,
                 autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                 ) -> torch.Tensor:
        """Weighted per-sample loss ``[B]`` of ``net(x_t, t, cond)`` on clean latents ``z``.

        ``generator``: a CPU generator, continued in place. ``autocast``: a context factory
        (e.g. ``accelerator.autocast``) around the forward pass and the loss terms.
        """
        b, device = z.shape[0], z.device
        # 1. Draws: timesteps, noise, condition dropout (report and hint), report-alone dropout.
        t = torch.randint(0, self.num_timesteps, (b,), generator=generator).to(device)
        eps = torch.randn(z.shape, generator=generator).to(device)
        drop = (torch.rand(b, generator=generator) < self.cond_drop).to(device)
        cond = cond.drop(drop, self.null)
        if self.report_drop > 0:  # drawn only then: older runs resume exactly
            alone = (torch.rand(b, generator=generator) < self.report_drop).to(device)
            cond = cond.drop_report(alone, self.null)
        if self.noise_offset > 0:  # drawn only then, last: older runs resume exactly
            eps = eps + self.noise_offset * torch.randn((b, z.shape[1], 1, 1), generator=generator).to(device)
        # 2. Noising: the forward process at t.
        a = self.alphas(device)[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * z + (1 - a).sqrt() * eps
        # 3. Prediction, target and weight of the prediction type, weighted MSE per sample.
        with autocast():
            pred = net(x_t, t, cond)
            target, weight = loss_target_and_weight(self.scheduler, z, eps, t, self.snr_gamma,
                                                    self.truncated_snr)
            per_sample = F.mse_loss(pred.float(), target, reduction="none").mean((1, 2, 3))
            return per_sample * weight
