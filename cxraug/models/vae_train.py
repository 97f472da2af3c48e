"""Training cxraug's own latent space: a small single-channel KL autoencoder (:func:`build_vae`,
:func:`train_vae`, configured by :class:`~cxraug.models.config.VAEConfig`) and the latent normalisation fitted after it
(:func:`set_latent_stats`). The latent space itself is :mod:`cxraug.models.autoencoder`.

``train_vae`` logs ``{"step": n, "recon_loss": x}`` (and ``perceptual`` with that term on) every
50 steps to ``train_log.jsonl`` in its output folder (a :class:`~cxraug.core.progress.MetricsLog`)
and, given a checkpoint folder, resumes exactly after a kill. The perceptual term is
:mod:`cxraug.models.perceptual`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from cxraug.core.precision import resolve_precision
from cxraug.core.progress import MetricsLog, job_progress
from cxraug.core.training import EpochReplay, TrainState
from cxraug.data.transforms import uint8_to_model
from cxraug.models.autoencoder import LatentSpace, first_output
from cxraug.models.config import VAEConfig
from cxraug.models.perceptual import PerceptualLoss

#: Steps between two checkpoints of :func:`train_vae` (when it is given a folder for them).
CHECKPOINT_EVERY = 250


def build_vae(config: VAEConfig) -> LatentSpace:
    """A freshly initialised single-channel ``AutoencoderKL`` (seeded by ``config.seed``)."""
    config.validate()
    chans = tuple(int(c) for c in config.block_out_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        vae = AutoencoderKL(in_channels=1, out_channels=1, block_out_channels=chans,
                            down_block_types=("DownEncoderBlock2D",) * len(chans),
                            up_block_types=("UpDecoderBlock2D",) * len(chans),
                            layers_per_block=config.layers_per_block,
                            latent_channels=config.latent_channels,
                            norm_num_groups=min(32, math.gcd(*chans)),
                            sample_size=config.image_size, scaling_factor=1.0)
    return LatentSpace(vae, config.image_size, 1.0, source="cxraug.train_vae")


class _UInt8Images(torch.utils.data.Dataset):
    """``uint8 [N, H, W]`` -> items ``[1, H, W]`` in [-1, 1]."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return uint8_to_model(np.asarray(self.images[i]))


def as_dataset(images: np.ndarray | torch.utils.data.Dataset) -> torch.utils.data.Dataset:
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 3:
            raise ValueError(f"expected uint8 images [N, H, W], got {images.dtype} {images.shape}")
        return _UInt8Images(images)
    return images


def random_crop(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """One random ``size x size`` window per image of ``[B, C, H, W]`` (``size`` 0: unchanged)."""
    if not size or size >= x.shape[-1]:
        return x
    h, w = x.shape[-2:]
    ys = torch.randint(0, h - size + 1, (len(x),), generator=generator).tolist()
    xs = torch.randint(0, w - size + 1, (len(x),), generator=generator).tolist()
    return torch.stack([img[:, y:y + size, x0:x0 + size] for img, y, x0 in zip(x, ys, xs)])


def train_vae(images: np.ndarray | torch.utils.data.Dataset, config: VAEConfig,
              out_dir: str | Path | None = None, device: str | torch.device = "cpu",
              progress: bool = True, checkpoints: str | Path | None = None,
              checkpoint_every: int = CHECKPOINT_EVERY,
              max_steps: int | None = None) -> LatentSpace | None:
    """Train a single-channel KL autoencoder and (if ``out_dir``) save it.

    ``images``: ``uint8 [N, H, W]`` or a Dataset of ``[1, H, W]`` in [-1, 1] (or tuples whose first
    item is that), with ``H = W = config.image_size``. Loss per pixel: L1 (or MSE) reconstruction
    + ``kl_weight`` * KL / (H * W); that is LDM's ratio of summed reconstruction to summed KL;
    with ``perceptual_weight`` > 0, + that times the LPIPS-style distance on the feature maps of
    the classifier in ``perceptual_net`` (:mod:`cxraug.models.perceptual`; logged as
    ``perceptual``, recorded with the net in the saved meta). ``precision`` bf16: forward passes
    under CPU/CUDA autocast, losses in fp32.
    Afterwards the latent statistics over up to ``scale_samples`` images set the normalisation
    (``latent_norm``: per-channel mean/std, or ``scale_factor = 1 / std(z)``). Returns the frozen
    latent space.

    ``checkpoints``: a folder for the training state every ``checkpoint_every`` steps (and at the
    last); a rerun with the same arguments resumes from its newest intact checkpoint and ends
    with the uninterrupted run's weights (:mod:`cxraug.core.training`). ``max_steps`` stops early
    (to simulate an interruption in tests) and returns None.
    """
    # 1. Setup: model, data order, optimiser; resume from the newest checkpoint. The loader's
    #    shuffles, the crops and the posterior noise all come from one generator, so a checkpoint
    #    holds its state and the epoch in progress is replayed from where it began.
    space = build_vae(config).to(device)
    vae = space.vae.train()
    data = as_dataset(images)
    gen = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(data, batch_size=config.batch_size, shuffle=True,
                                         drop_last=len(data) > config.batch_size, generator=gen)
    opt = torch.optim.AdamW(vae.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    recon_fn = F.l1_loss if config.recon_loss == "l1" else F.mse_loss
    perceptual = perceptual_term(config, device)
    autocast = precision_context(config.precision, device)
    state = TrainState(vae, opt, generators={"data": gen}, order=EpochReplay(lambda: loader, gen),
                       global_rng=True,
                       extra={"losses": []} | ({"perceptual": []} if perceptual is not None else {}))
    step = state.resume(checkpoints) if checkpoints is not None else 0
    losses = list(state.extra["losses"])  # the last 50 (the log's window) before a resume
    p_losses = list(state.extra.get("perceptual", []))
    log = MetricsLog(Path(out_dir) / "train_log.jsonl") if out_dir is not None else None
    if log is not None:
        log.resume(step)
    stop = config.steps if max_steps is None else min(config.steps, max_steps)
    with job_progress("vae", "loss {task.fields[loss]}", enabled=progress, transient=True) as bar:
        task = bar.add_task("train", total=config.steps, completed=step, loss="-")
        while step < stop:
            # 2. Forward: encode, sample with the run's generator, decode.
            x = first_output(state.order.next()).to(device)
            if x.shape[1:] != (1, config.image_size, config.image_size):
                raise ValueError(f"vae.image_size is {config.image_size} but the training images "
                                 f"are {tuple(x.shape[1:])}; resize them or change the setting")
            x = random_crop(x, config.crop_size, gen)
            with autocast():
                posterior = vae.encode(x).latent_dist
                recon = vae.decode(posterior.sample(gen if x.device.type == "cpu" else None)).sample
            # 3. Loss (fp32): reconstruction per pixel + KL per pixel (LDM's ratio) + the
            #    perceptual distance on the classifier's feature maps.
            recon = recon.float()
            rec = recon_fn(recon, x)
            kl = posterior.kl().float().mean() / (x.shape[-1] * x.shape[-2])
            loss = rec + config.kl_weight * kl
            if perceptual is not None:
                with autocast():
                    p_loss = perceptual(recon, x)
                loss = loss + config.perceptual_weight * p_loss
                p_losses.append(p_loss.item())
            # 4. Update.
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(rec.item())
            step += 1
            # 5. Log (a line a user, or a non-terminal job, can follow) and checkpoint.
            bar.update(task, advance=1, loss=f"{losses[-1]:.4f}")
            if log is not None and (step % 50 == 0 or step == config.steps):
                extra = {"perceptual": float(np.mean(p_losses[-50:]))} if p_losses else {}
                log.write(step, recon_loss=float(np.mean(losses[-50:])), **extra)
            if checkpoints is not None and (step % checkpoint_every == 0 or step == config.steps):
                state.extra["losses"] = losses[-50:]
                if perceptual is not None:
                    state.extra["perceptual"] = p_losses[-50:]
                state.save(checkpoints, step, keep=2)
    if step < config.steps:
        return None
    # 6. Normalisation so that diffusion latents have zero mean and unit variance.
    space.freeze()
    set_latent_stats(space, data, config.latent_norm, config.scale_samples, config.batch_size, gen)
    if out_dir is not None:
        tail = losses[-max(1, min(50, len(losses))):]
        record = {"steps": step, "final_recon_loss": float(np.mean(tail)),
                  "recon_loss": config.recon_loss, "kl_weight": config.kl_weight}
        if perceptual is not None:  # which network and weight shaped this latent space
            record |= {"perceptual_weight": config.perceptual_weight, "perceptual": perceptual.info,
                       "final_perceptual": float(np.mean(p_losses[-50:]))}
        if config.precision != "fp32":
            record["precision"] = resolved_precision(config.precision, device)
        space.save(out_dir, {"train": record})
    return space


def perceptual_term(config: VAEConfig, device: str | torch.device = "cpu") -> PerceptualLoss | None:
    """The frozen perceptual distance of ``config`` (None when ``perceptual_weight`` is 0); a
    missing or wrong ``vae.perceptual_net`` is a one-line ConfigError naming that key."""
    if not config.perceptual_weight:
        return None
    return PerceptualLoss.from_classifier(config.perceptual_net, "vae.perceptual_net").to(device)


def resolved_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``vae.precision`` on ``device``: ``fp32`` or ``bf16`` (``auto`` picks bf16 where it is fast,
    :mod:`cxraug.core.precision`; where it would pick fp16, a GPU without bf16, fp32: this loop
    has no loss scaling)."""
    resolved = resolve_precision(precision, torch.device(device).type)
    return "fp32" if resolved == "fp16" else resolved


def precision_context(precision: str, device: str | torch.device = "cpu"):
    """A factory of the autocast context for ``precision`` (fp32: a disabled autocast)."""
    enabled = resolved_precision(precision, device) == "bf16"
    return lambda: torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def set_latent_stats(space: LatentSpace, data: torch.utils.data.Dataset, latent_norm: str = "channel",
                     max_images: int = 512, batch_size: int = 16,
                     generator: torch.Generator | None = None) -> LatentSpace:
    """Fit the normalisation on sampled raw latents of the first ``max_images`` items of ``data``:
    per-channel mean and std (``latent_norm="channel"``, scale 1) or ``scale = 1 / std``."""
    n = min(len(data), max_images)
    zs = []
    for start in range(0, n, batch_size):
        x = torch.stack([first_output(data[i]) for i in range(start, min(n, start + batch_size))])
        zs.append(DiagonalGaussianDistribution(space.encode_moments(x)).sample(generator))
    z = torch.cat(zs).float()
    if latent_norm == "channel":
        space.scale_factor, space.shift_factor = 1.0, 0.0
        space.latents_mean = z.mean((0, 2, 3)).tolist()
        space.latents_std = z.std((0, 2, 3)).clamp_min(1e-6).tolist()
    else:
        space.latents_mean = space.latents_std = None
        space.scale_factor = 1.0 / max(float((z - space.shift_factor).std()), 1e-8)
    space._fingerprint = None
    return space
