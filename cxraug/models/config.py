"""The settings of cxraug's own models: the latent space (:class:`VAEConfig`) and the U-ViT's
shape (:class:`DenoiserConfig`). Sections of the Diff-CXR recipe
(:class:`~cxraug.diffusion.config.DiffCXRConfig`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cxraug.core.config import ConfigError

#: the spectral loss's window sizes in pixels (:mod:`cxraug.models.spectral`): from the finest band
#: up to a quarter of a 128 px image
SPECTRAL_WINDOWS = (8, 16, 32)


@dataclass
class VAEConfig:
    """A single-channel KL autoencoder and how to train it (CPU-sized defaults).

    ``pretrained`` non-empty means: do not train, load that diffusers VAE (hub id or folder).
    The downsampling factor is ``2 ** (len(block_out_channels) - 1)`` (3 levels -> 4, 4 -> 8);
    ``latent_channels`` is C of the ``C x H/f x W/f`` latents (the denoiser reads it from the
    trained VAE; its cost grows with C only in the patch embedding and output layers).
    """

    pretrained: str = ""
    subfolder: str = ""
    image_size: int = 64
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    layers_per_block: int = 1
    latent_channels: int = 4
    steps: int = 2000
    batch_size: int = 16
    # Train on random crop_size x crop_size crops (0 = whole images). The VAE is convolutional
    # (its one attention block sees any grid), so crops cut the cost per step by the area ratio;
    # the latent statistics are still fitted on whole images. No flips (laterality).
    crop_size: int = 0
    lr: float = 2e-4
    weight_decay: float = 0.0
    kl_weight: float = 1e-6
    recon_loss: str = "l1"
    latent_norm: str = "channel"
    scale_samples: int = 512
    # LPIPS-style term (cxraug.models.perceptual) on the feature maps of a classifier trained on
    # the training split: ``perceptual_net`` is its folder (cxraug train classifier --out DIR);
    # ``perceptual_weight`` 0 = off (L1 + KL only, as every recipe before v3).
    perceptual_weight: float = 0.0
    perceptual_net: str = ""
    # fp32, or bf16 autocast (forward passes in bf16, weights and optimiser in fp32); auto picks
    # bf16 on CPUs with bf16 matrix units (cxraug.core.precision). benchmarks/vae_precision.py
    # measures both on the machine at hand.
    precision: str = "fp32"
    seed: int = 0

    def validate(self) -> None:
        if self.recon_loss not in ("l1", "mse"):
            raise ConfigError(f"vae.recon_loss: must be l1 or mse, got {self.recon_loss!r}")
        if self.latent_norm not in ("channel", "global"):
            raise ConfigError(f"vae.latent_norm: must be channel or global, got {self.latent_norm!r}")
        if not self.block_out_channels or any(c <= 0 for c in self.block_out_channels):
            raise ConfigError("vae.block_out_channels: give one positive width per level, e.g. [32, 64, 128]")
        if self.crop_size and (self.crop_size > self.image_size
                               or self.crop_size % 2 ** (len(self.block_out_channels) - 1)):
            raise ConfigError(f"vae.crop_size {self.crop_size}: must be 0 (whole images) or at most "
                              f"vae.image_size {self.image_size} and divisible by the downsampling factor")
        if self.latent_channels < 1:
            raise ConfigError(f"vae.latent_channels: must be >= 1, got {self.latent_channels}")
        if not (math.isfinite(self.perceptual_weight) and self.perceptual_weight >= 0):
            raise ConfigError(f"vae.perceptual_weight: must be a finite number >= 0 (0 = off), "
                              f"got {self.perceptual_weight}")
        if self.perceptual_weight and not self.perceptual_net.strip() and not self.pretrained:
            raise ConfigError("vae.perceptual_net: empty while vae.perceptual_weight > 0; set it to "
                              "the folder of a classifier trained on the training split (cxraug "
                              "train classifier --data DATA --out DIR), or vae.perceptual_weight=0")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ConfigError(f"vae.precision {self.precision!r}: choose fp32, bf16 or auto")
        if self.image_size % 2 ** (len(self.block_out_channels) - 1):
            raise ConfigError(f"vae.image_size {self.image_size} must be divisible by the downsampling "
                              f"factor {2 ** (len(self.block_out_channels) - 1)}")


@dataclass
class DenoiserConfig:
    """U-ViT shape (``preset`` from cxraug.models.uvit.PRESETS, then any field overrides)."""

    preset: str = "cpu-192"
    width: int | None = None
    depth: int | None = None
    heads: int | None = None
    patch_size: int | None = None
    mlp_ratio: float | None = None
    gradient_checkpointing: bool = False
