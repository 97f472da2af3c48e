"""Samplers: diffusers schedulers driven by one plain loop, with batched classifier-free guidance.

The denoiser knows nothing about noise schedules; the scheduler knows nothing about the
denoiser. :func:`sample` joins them:

* every image has its own seed, so its initial noise (and hence the image) does not depend on
  the batch it was generated in, the batch size or the number of processes;
* guidance runs the conditional and unconditional passes as one doubled batch
  (``eps = eps_u + w (eps_c - eps_u)``, the paper's form; ``w = 1`` skips the unconditional pass);
* the DKIM hint, when given, travels with the report context and is dropped with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

SAMPLERS = ("dpm++", "ddim")

Denoiser = Callable[..., torch.Tensor]


def noise_scheduler(num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                    beta_end: float = 0.012, beta_schedule: str = "scaled_linear",
                    prediction_type: str = "epsilon", zero_terminal_snr: bool = False) -> DDPMScheduler:
    """The training schedule (default: Stable Diffusion's scaled-linear betas, epsilon prediction).

    Samplers are built from its config, so they share the prediction type and beta rescaling.
    """
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_start=beta_start,
                         beta_end=beta_end, beta_schedule=beta_schedule,
                         prediction_type=prediction_type, clip_sample=False,
                         rescale_betas_zero_snr=zero_terminal_snr)


def scheduler_for(train_cfg) -> DDPMScheduler:
    """The training schedule a :class:`~cxraug.diffusion.config.TrainConfig` describes."""
    return noise_scheduler(train_cfg.num_train_timesteps, train_cfg.beta_start, train_cfg.beta_end,
                           train_cfg.beta_schedule, getattr(train_cfg, "prediction_type", "epsilon"),
                           getattr(train_cfg, "zero_terminal_snr", False))


def loss_target_and_weight(scheduler: DDPMScheduler, z: torch.Tensor, eps: torch.Tensor,
                           t: torch.Tensor, snr_gamma: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The regression target of the scheduler's prediction type (epsilon or v) and per-sample
    loss weights ``[B]``: ones, or Min-SNR-gamma (``min(snr, g) / snr`` for epsilon,
    ``min(snr, g) / (snr + 1)`` for v)."""
    a = scheduler.alphas_cumprod.to(z.device)[t].view(-1, 1, 1, 1)
    if scheduler.config.prediction_type == "v_prediction":
        target = a.sqrt() * eps - (1 - a).sqrt() * z
    else:
        target = eps
    if snr_gamma <= 0:
        return target, torch.ones(len(t), device=z.device)
    snr = (a / (1 - a).clamp_min(1e-12)).flatten()
    clipped = torch.minimum(snr, torch.full_like(snr, snr_gamma))
    if scheduler.config.prediction_type == "v_prediction":
        return target, clipped / (snr + 1)
    return target, clipped / snr.clamp_min(1e-12)


def make_sampler(name: str, train_scheduler: DDPMScheduler):
    """A sampling scheduler with the same noise schedule as training."""
    config = train_scheduler.config
    if name == "dpm++":
        spacing = {"timestep_spacing": "trailing"} if config.get("rescale_betas_zero_snr") else {}
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++",
                                                       solver_order=2, **spacing)
    if name == "ddim":
        # zero terminal SNR: sample from the last timestep ("trailing"), as Lin et al. prescribe
        spacing = {"timestep_spacing": "trailing"} if config.get("rescale_betas_zero_snr") else {}
        return DDIMScheduler.from_config(config, clip_sample=False, set_alpha_to_one=False, **spacing)
    from cxraug.core.errors import CxraugError

    raise CxraugError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def initial_noise(seeds: Sequence[int], shape: tuple[int, ...], device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[len(seeds), *shape]`` standard normal, each row from its own seeded CPU generator."""
    rows = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(rows).to(device=device, dtype=dtype)


@torch.inference_mode()
def sample(model: Denoiser, scheduler, latents: torch.Tensor, context: torch.Tensor,
           null_context: torch.Tensor, steps: int = 50, guidance: float = 2.0,
           hint: torch.Tensor | None = None, null_hint: torch.Tensor | None = None) -> torch.Tensor:
    """Run the reverse process from ``latents`` ``[B, C, h, w]`` (already initial noise).

    ``context`` ``[B, K, D]``; ``null_context`` ``[K, D]`` (broadcast). ``hint``/``null_hint``
    likewise for a DKIM-controlled model (``model(x, t, context, hint)``). Returns ``z_0``.
    """
    scheduler.set_timesteps(steps, device=latents.device)
    b = latents.shape[0]
    guided = guidance != 1.0
    ctx = torch.cat([context, null_context.expand(b, *null_context.shape)]) if guided else context
    hnt = None
    if hint is not None:
        nh = null_hint if null_hint is not None else null_context
        hnt = torch.cat([hint, nh.expand(b, *nh.shape)]) if guided else hint
    x = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        inp = torch.cat([x, x]) if guided else x
        inp = scheduler.scale_model_input(inp, t)
        tt = t.expand(inp.shape[0]).to(latents.device)
        eps = model(inp, tt, ctx) if hnt is None else model(inp, tt, ctx, hnt)
        if guided:
            eps_c, eps_u = eps.chunk(2)
            eps = eps_u + guidance * (eps_c - eps_u)
        x = scheduler.step(eps, t, x).prev_sample
    return x
