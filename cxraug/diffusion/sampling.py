"""Samplers: diffusers schedulers driven by one plain loop, with batched classifier-free guidance.

The denoiser knows nothing about noise schedules; the scheduler knows nothing about the
denoiser. :func:`sample` joins them:

* every image has its own seed, so its initial noise (and hence the image) does not depend on
  the batch it was generated in, the batch size or the number of processes;
* guidance runs the conditional and unconditional passes as one doubled batch
  (``eps = eps_u + w (eps_c - eps_u)``, the paper's form; ``w = 1`` skips the unconditional pass);
* the denoiser is called as ``net(x_t, t, cond)`` (:mod:`cxraug.diffusion.denoiser`); the DKIM
  hint, when the condition has one, travels with the report context and is dropped with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from cxraug.core.errors import CxraugError
from cxraug.diffusion.denoiser import Condition

SAMPLERS = ("dpm++", "ddim")


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


def make_sampler(name: str, train_scheduler: DDPMScheduler, karras_sigmas: bool = False):
    """A sampling scheduler with the same noise schedule as training. ``karras_sigmas``
    (``sample.karras_sigmas``): dpm++ visits Karras et al.'s noise levels; DDIM keeps its
    uniform timesteps."""
    config = train_scheduler.config
    if name == "dpm++":
        spacing = {"timestep_spacing": "trailing"} if config.get("rescale_betas_zero_snr") else {}
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++",
                                                       solver_order=2, use_karras_sigmas=karras_sigmas,
                                                       **spacing)
    if name == "ddim":
        # zero terminal SNR: sample from the last timestep ("trailing"), as Lin et al. prescribe
        spacing = {"timestep_spacing": "trailing"} if config.get("rescale_betas_zero_snr") else {}
        return DDIMScheduler.from_config(config, clip_sample=False, set_alpha_to_one=False, **spacing)

    raise CxraugError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def initial_noise(seeds: Sequence[int], shape: tuple[int, ...], device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[len(seeds), *shape]`` standard normal, each row from its own seeded CPU generator."""
    rows = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(rows).to(device=device, dtype=dtype)


@torch.inference_mode()
def sample(model: Callable[..., torch.Tensor], scheduler, latents: torch.Tensor, cond: Condition,
           null: Condition, steps: int = 50, guidance: float = 2.0) -> torch.Tensor:
    """Run the reverse process from ``latents`` ``[B, C, h, w]`` (already initial noise).

    ``model(x_t, t, cond)``: a :class:`~cxraug.diffusion.denoiser.Denoiser`. ``cond``: the
    batch's :class:`~cxraug.diffusion.denoiser.Condition` (``[B, K, D]`` fields); ``null``: the
    null condition (``[K, D]`` fields, broadcast). Returns ``z_0``.
    """
    scheduler.set_timesteps(steps, device=latents.device)
    cond = guidance_condition(cond, null, guidance)
    x = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(guided_output(model, scheduler, x, t, cond, guidance), t, x).prev_sample
    return x


def guidance_condition(cond: Condition, null: Condition, guidance: float) -> Condition:
    """The condition :func:`guided_output` takes: ``cond`` followed by ``null`` (one doubled
    batch) when guided, ``cond`` alone when ``guidance`` is 1."""
    return cond.with_null(null) if guidance != 1.0 else cond


def guided_output(model: Callable[..., torch.Tensor], scheduler, x: torch.Tensor, t: torch.Tensor,
                  cond: Condition, guidance: float) -> torch.Tensor:
    """One model output at timestep ``t`` with classifier-free guidance
    (``out_u + w (out_c - out_u)``); ``cond`` from :func:`guidance_condition`."""
    guided = guidance != 1.0
    inp = scheduler.scale_model_input(torch.cat([x, x]) if guided else x, t)
    out = model(inp, t.expand(inp.shape[0]).to(x.device), cond)
    if guided:
        out_c, out_u = out.chunk(2)
        out = out_u + guidance * (out_c - out_u)
    return out
