"""Sharpen a latent space's decoder without moving the latent space (Stable Diffusion's
``sd-vae-ft-*`` recipe): the encoder, the latent normalisation and so every denoiser trained on
these latents stay valid; only ``vae.decoder`` (and ``post_quant_conv``) learn, with a PatchGAN
discriminator's hinge loss on top of the L1 reconstruction (LDM's ``LPIPSWithDiscriminator``;
its LPIPS term, whose ImageNet weights a CPU-only offline run does not have, is optional here and
uses a classifier trained on the training split instead: ``decoder.perceptual_weight``,
:mod:`cxraug.models.perceptual`). Optional too: a multi-resolution spectral-magnitude term
(``decoder.spectral_weight``, :mod:`cxraug.models.spectral`).

Why: a small autoencoder trained with L1 alone decodes blurred textures; a classifier tells its
reconstructions of real radiographs from the originals almost perfectly (two-sample AUC 0.968 for
the 128 px model), which no denoiser can beat. The adversarial term restores high-frequency
texture; EMA of the decoder weights keeps the result stable (SD's ft-EMA decoder).

Parts, EDM-style: :class:`PatchDiscriminator` (the network), :class:`DecoderGANLoss` (the loss
object: generator and discriminator halves), :func:`tune_decoder` (the loop, resumable from
checkpoints of the training kit, :mod:`cxraug.core.training`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxraug.core.progress import MetricsLog, job_progress
from cxraug.core.seeds import stable_seed
from cxraug.core.training import BatchOrder, TrainState, ema_model
from cxraug.diffusion.config import DISC_NORMS, DecoderTuneConfig
from cxraug.models.autoencoder import LatentSpace, first_output
from cxraug.models.perceptual import PerceptualLoss
from cxraug.models.spectral import SpectralLoss
from cxraug.models.vae_train import as_dataset, random_crop


class PatchDiscriminator(nn.Module):
    """pix2pix / LDM ``NLayerDiscriminator`` for one channel: ``[B, 1, H, W]`` in [-1, 1] ->
    patch logits ``[B, 1, h, w]`` (receptive field 70 px with 3 layers).

    ``norm``: ``"batch"`` (LDM's) or ``"none"`` (every crop judged on its own, whatever else is
    in its batch; real and reconstructed crops are scored in separate batches).
    """

    def __init__(self, channels: int = 32, layers: int = 3, norm: str = "batch"):
        super().__init__()
        if norm not in DISC_NORMS:
            raise ValueError(f"discriminator norm {norm!r}: choose one of {', '.join(DISC_NORMS)}")
        mods: list[nn.Module] = [nn.Conv2d(1, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < layers else 1
            mods.append(nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=norm != "batch"))
            if norm == "batch":
                mods.append(nn.BatchNorm2d(channels * mult))
            mods.append(nn.LeakyReLU(0.2, True))
        mods.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)
        for m in self.modules():  # pix2pix initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DecoderGANLoss:
    """L1 reconstruction + adaptive-weight hinge GAN (LDM). ``decoder_loss`` is the decoder's
    half, ``disc_loss`` the discriminator's; both return ``(loss, logs)``."""

    def __init__(self, last_layer: torch.Tensor, adv_weight: float = 0.5,
                 perceptual: PerceptualLoss | None = None, perceptual_weight: float = 0.0,
                 spectral: SpectralLoss | None = None, spectral_weight: float = 0.0):
        self.last_layer, self.adv_weight = last_layer, adv_weight
        self.perceptual, self.perceptual_weight = perceptual, perceptual_weight
        self.spectral, self.spectral_weight = spectral, spectral_weight

    def adaptive_weight(self, rec: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        """``adv_weight * |d rec / d W_last| / |d adv / d W_last|``: at the decoder's output layer
        the weighted GAN gradient is ``adv_weight`` times as large as the reconstruction's, whatever
        the scale of the discriminator's logits."""
        g_rec = torch.autograd.grad(rec, self.last_layer, retain_graph=True)[0]
        g_adv = torch.autograd.grad(adv, self.last_layer, retain_graph=True)[0]
        return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4).detach() * self.adv_weight

    def decoder_loss(self, recon: torch.Tensor, x: torch.Tensor, disc: nn.Module,
                     adversarial: bool) -> tuple[torch.Tensor, dict]:
        rec = F.l1_loss(recon, x)
        logs = {"rec": rec.item()}
        if self.perceptual is not None:  # LDM's nll: L1 + perceptual, balanced against the GAN
            p = self.perceptual(recon, x)
            logs["perceptual"] = p.item()
            rec = rec + self.perceptual_weight * p
        if self.spectral is not None:  # texture power per band, whatever its phase
            s = self.spectral(recon, x)
            logs["spectral"] = s.item()
            rec = rec + self.spectral_weight * s
        if not adversarial:
            return rec, logs
        adv = -disc(recon).mean()
        w = self.adaptive_weight(rec, adv)
        return rec + w * adv, logs | {"adv": adv.item(), "adv_w": w.item()}

    @staticmethod
    def disc_loss(recon: torch.Tensor, x: torch.Tensor, disc: nn.Module) -> tuple[torch.Tensor, dict]:
        real, fake = disc(x), disc(recon.detach())
        loss = 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())
        return loss, {"disc": loss.item(), "logit_real": real.mean().item(), "logit_fake": fake.mean().item()}


def trainable_decoder(space: LatentSpace) -> nn.ModuleDict:
    """What the tuning trains: the decoder and the 1x1 conv before it (``post_quant_conv``,
    absent in some diffusers configs)."""
    vae = space.vae
    parts = {"decoder": vae.decoder}
    if getattr(vae, "post_quant_conv", None) is not None:
        parts["post_quant_conv"] = vae.post_quant_conv
    return nn.ModuleDict(parts)


def tune_decoder(space: LatentSpace, images: np.ndarray | torch.utils.data.Dataset,
                 config: DecoderTuneConfig, checkpoints: str | Path, log_path: str | Path | None = None,
                 progress: bool = True, max_steps: int | None = None) -> LatentSpace | None:
    """Fine-tune ``space``'s decoder on ``images`` (``uint8 [N, H, W]`` or a Dataset of
    ``[1, H, W]`` in [-1, 1]) for ``config.steps`` steps; the encoder stays frozen.

    ``checkpoints``: folder of ``step_*`` checkpoints (a rerun resumes from the newest intact one,
    exactly); ``log_path``: the JSON-lines metrics log (default ``checkpoints/../decoder_log.jsonl``).
    Returns ``space`` with the EMA decoder weights loaded (its fingerprint reset), or None when
    stopped early by ``max_steps`` (tests).
    """
    # 1. Setup: frozen encoder, trainable decoder + discriminator, one optimiser (two groups),
    #    EMA of the decoder, resume from the newest checkpoint.
    config.validate(space.image_size, space.downsample)
    if space.rgb:
        raise ValueError("decoder tuning is for single-channel latent spaces trained by cxraug; "
                         f"{space.source} is an RGB autoencoder")
    ckpts = Path(checkpoints)
    space.freeze()
    decoder = trainable_decoder(space)
    dec_params = list(decoder.parameters())
    for p in dec_params:
        p.requires_grad_(True)
    space.vae.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        disc = PatchDiscriminator(config.disc_channels, config.disc_layers, config.disc_norm)
    model = nn.ModuleDict({"decoder": decoder, "disc": disc})
    # Parameters without a gradient are skipped by Adam, so one optimiser serves both halves.
    opt = torch.optim.Adam([{"params": dec_params, "lr": config.lr},
                            {"params": list(disc.parameters()), "lr": config.disc_lr}], betas=(0.5, 0.9))
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    ema = ema_model(decoder, config.ema_decay)
    state = TrainState(model, opt, ema, lr_sched)
    step = state.resume(ckpts)
    perceptual = None
    if config.perceptual_weight:
        perceptual = PerceptualLoss.from_classifier(config.perceptual_net, "decoder.perceptual_net")
    spectral = SpectralLoss() if config.spectral_weight else None
    loss_fn = DecoderGANLoss(space.vae.decoder.conv_out.weight, config.adv_weight, perceptual,
                             config.perceptual_weight, spectral, config.spectral_weight)
    data = as_dataset(images)
    order = BatchOrder(len(data), stable_seed(config.seed, "decoder"))
    log = MetricsLog(log_path or ckpts.parent / "decoder_log.jsonl")
    log.resume(step)
    stop = config.steps if max_steps is None else min(config.steps, max_steps)
    with job_progress("decoder", "rec {task.fields[rec]} disc {task.fields[disc]}", enabled=progress,
                      transient=True) as bar:
        task = bar.add_task("tune", total=config.steps, completed=step, rec="-", disc="-")
        while step < stop:
            # 2. Decode a posterior sample of (cropped) real images; the encoder is frozen. Rows,
            #    crops and noise depend on the step alone, so a resumed run continues exactly.
            gen = torch.Generator().manual_seed(stable_seed(config.seed, "decoder-step", step))
            rows = order.rows(step * config.batch_size, min(config.batch_size, len(data)))
            x = random_crop(torch.stack([first_output(data[int(i)]) for i in rows]), config.crop_size, gen)
            with torch.no_grad():
                z = space.vae.encode(x).latent_dist.sample(gen)
            recon = space.vae.decode(z).sample
            # 3. Decoder update (the discriminator's parameters get no gradient here).
            adversarial = step >= config.disc_start
            disc.requires_grad_(False)
            loss, logs = loss_fn.decoder_loss(recon, x, disc, adversarial)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(dec_params, 1.0)
            opt.step()
            # 4. Discriminator update on the same pair.
            disc.requires_grad_(True)
            d_loss, d_logs = loss_fn.disc_loss(recon, x, disc)
            opt.zero_grad(set_to_none=True)
            d_loss.backward()
            opt.step()
            # 5. EMA, log, checkpoint.
            ema.update_parameters(decoder)
            step += 1
            bar.update(task, advance=1, rec=f"{logs['rec']:.4f}", disc=f"{d_logs['disc']:.3f}")
            if step % config.log_every == 0 or step == config.steps:
                log.write(step, **logs, **d_logs)
            if step % config.checkpoint_every == 0 or step == config.steps:
                state.save(ckpts, step, config.keep_checkpoints)
    if step < config.steps:
        return None
    # 6. The EMA decoder replaces the trained one; the latent space is frozen again.
    decoder.load_state_dict(ema.module.state_dict())
    space.freeze()
    space._fingerprint = None
    return space
