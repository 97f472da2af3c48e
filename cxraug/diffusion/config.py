"""The Diff-CXR recipe: one typed config for data, latent space, report encoder, denoiser,
training and sampling. ``recipes/diffcxr-paper.yaml`` holds the paper's values (GPU);
``recipes/diffcxr-cpu.yaml`` a run that trains on 2 CPU cores in under an hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from cxraug.core.config import ConfigError
from cxraug.models.config import SPECTRAL_WINDOWS, DenoiserConfig, VAEConfig
from cxraug.text.config import TextConfig


@dataclass
class DataConfig:
    """Which real images train the generator.

    ``data``: dataset folder / manifest, or ``sample:kermany`` (the embedded sample).
    ``real_frac`` < 1 trains on the nested real subset of that fraction (the ``--strict`` arm of
    ``cxraug bench``). ``filter``: an LNFS keep/drop CSV from ``cxraug filter``.
    ``prompts``: how label-only datasets get text: ``mined`` report-like sentences or the
    paper's fixed ``paper`` templates.
    """

    data: str = "sample:kermany"
    dataset: str = "auto"
    image_size: int = 64
    real_frac: float = 1.0
    split_seed: int = 0
    subset_seed: int = 0
    filter: str | None = None
    prompts: Literal["mined", "paper"] = "mined"
    skip_bad: bool = False

    def validate(self) -> None:
        if not 0 < self.real_frac <= 1:
            raise ConfigError(f"data.real_frac {self.real_frac}: must be in (0, 1]")


#: the decoder-tuning discriminator's normalisations (:class:`~cxraug.diffusion.decoder_tune.PatchDiscriminator`)
DISC_NORMS = ("batch", "none")


@dataclass
class DecoderTuneConfig:
    """How to fine-tune a latent space's decoder (``steps`` 0: leave it as trained).

    ``adv_weight`` scales LDM's adaptive weight (gradient-norm ratio of the reconstruction and
    adversarial terms at the decoder's last layer); ``disc_start`` steps train the discriminator
    alone before its loss reaches the decoder. Crops as in :class:`~cxraug.models.config.VAEConfig`;
    the loop is :func:`cxraug.diffusion.decoder_tune.tune_decoder`. ``perceptual_weight`` /
    ``perceptual_net``: the VAE's LPIPS-style term (``vae.perceptual_*``), here for the decoder.
    ``disc_norm``: the discriminator's normalisation, ``batch`` (LDM's) or ``none``.
    ``spectral_weight``: a multi-resolution spectral-magnitude term (:mod:`cxraug.models.spectral`)
    beside L1, rewarding the right amount of fine texture wherever it is placed (0 = off).
    """

    steps: int = 0
    batch_size: int = 16
    crop_size: int = 0
    lr: float = 1e-4
    disc_lr: float = 2e-4
    adv_weight: float = 0.5
    disc_start: int = 200
    disc_channels: int = 32
    disc_layers: int = 3
    disc_norm: str = "batch"
    ema_decay: float = 0.999
    log_every: int = 50
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    perceptual_weight: float = 0.0
    perceptual_net: str = ""
    spectral_weight: float = 0.0
    seed: int = 0

    def validate(self, image_size: int | None = None, downsample: int = 1) -> None:
        for key in ("steps", "disc_start"):
            if getattr(self, key) < 0:
                raise ConfigError(f"decoder.{key}: must be >= 0, got {getattr(self, key)}")
        for key in ("batch_size", "disc_channels", "disc_layers", "log_every", "checkpoint_every",
                    "keep_checkpoints"):
            if getattr(self, key) < 1:
                raise ConfigError(f"decoder.{key}: must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0 or self.disc_lr <= 0 or self.adv_weight < 0:
            raise ConfigError("decoder.lr and decoder.disc_lr must be > 0 and decoder.adv_weight >= 0")
        if self.disc_norm not in DISC_NORMS:
            raise ConfigError(f"decoder.disc_norm: must be one of {', '.join(DISC_NORMS)}, got {self.disc_norm!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"decoder.ema_decay: must be in [0, 1), got {self.ema_decay}")
        if not (math.isfinite(self.perceptual_weight) and self.perceptual_weight >= 0):
            raise ConfigError(f"decoder.perceptual_weight: must be a finite number >= 0 (0 = off), "
                              f"got {self.perceptual_weight}")
        if not (math.isfinite(self.spectral_weight) and self.spectral_weight >= 0):
            raise ConfigError(f"decoder.spectral_weight: must be a finite number >= 0 (0 = off), "
                              f"got {self.spectral_weight}")
        side = self.crop_size or image_size
        if self.spectral_weight and side is not None and side < max(SPECTRAL_WINDOWS):
            raise ConfigError(f"decoder.spectral_weight: the spectral term needs images or crops of at least "
                              f"{max(SPECTRAL_WINDOWS)} px, not {side}; raise decoder.crop_size or set "
                              "decoder.spectral_weight=0")
        if self.perceptual_weight and not self.perceptual_net.strip():
            raise ConfigError("decoder.perceptual_net: empty while decoder.perceptual_weight > 0; "
                              "set it to a classifier folder (as vae.perceptual_net)")
        if self.crop_size and (self.crop_size % downsample
                               or (image_size is not None and self.crop_size > image_size)):
            raise ConfigError(f"decoder.crop_size {self.crop_size}: must be 0 (whole images) or at most "
                              f"the image size and divisible by the downsampling factor {downsample}")


@dataclass
class TrainConfig:
    """Optimisation. Paper: AdamW 2e-4, wd 0.03, betas (0.9, 0.9), 5k warm-up, EMA 0.9999,
    condition dropout 0.1, scaled-linear betas 0.00085..0.012 over 1000 steps, epsilon."""

    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.03
    betas: list[float] = field(default_factory=lambda: [0.9, 0.9])
    warmup_steps: int = 200
    # After the warm-up: "constant" (the paper), or "cosine" / "linear" decay to 0 at train.steps
    # (diffusers.optimization). A decay ends a run, or a train.init_from continuation, on a
    # lower loss than the same steps at a constant rate.
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    ema_decay: float = 0.999
    cond_drop: float = 0.1
    # Stage 2 only (``adapter.report_drop``): also replace the report alone by the null embedding
    # with this probability, keeping the disease hint, so the adapter must carry the label itself
    # when the report does not. 0 = the paper (report and hint only dropped together).
    report_drop: float = 0.0
    grad_clip: float = 1.0
    precision: Literal["auto", "fp32", "no", "fp16", "bf16"] = "auto"  # cxraug.core.precision
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    # Paper: epsilon, uniform weighting. Options for faster convergence at small compute:
    # "v_prediction" (Salimans & Ho 2022), Min-SNR-gamma loss weights (Hang et al. 2023; 5 is
    # their default; 0 = off) and zero terminal SNR (Lin et al. 2024; needs v_prediction).
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    snr_gamma: float = 0.0
    # Truncated-SNR weights (Salimans & Ho 2022): the x0 error weighted by max(SNR, 1), i.e.
    # epsilon's emphasis on low-noise steps (fine detail) where SNR > 1 and x0's at high noise,
    # zero SNR included; for v-prediction, whose plain loss weights the x0 error by SNR + 1.
    truncated_snr: bool = False
    zero_terminal_snr: bool = False
    # Offset noise (Guttenberg 2023; diffusers' --noise_offset): add noise_offset * N(0, 1) per
    # sample and channel, constant over the image, to the training noise, so the model learns to
    # move an image's mean brightness, which the scaled-linear schedule's non-zero terminal SNR
    # hides from it; 0 = off (the paper). Stage 2 inherits stage 1's.
    noise_offset: float = 0.0
    # Stage 1 only: fine-tune another model's U-ViT instead of training one from scratch. A shipped
    # model name, a run or model folder, or a hub id; the run takes that model's latent space and
    # report encoder (its U-ViT was trained on them) and, from a run folder, its splits. Every
    # setting here may differ from the source's (e.g. the prediction type): the weights are the
    # starting point, the optimiser and the step count start afresh. "" = from scratch.
    init_from: str = ""
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    sample_every: int = 1000
    seed: int = 0

    def validate(self) -> None:
        if self.steps <= 0 or self.batch_size <= 0:
            raise ConfigError("train.steps and train.batch_size must be > 0")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr {self.lr}: must be a finite number > 0, e.g. 2e-4")
        if self.warmup_steps < 0 or not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ConfigError("warmup_steps must be >= 0 and grad_clip a finite number >= 0")
        if not 0 <= self.cond_drop < 1:
            raise ConfigError(f"train.cond_drop {self.cond_drop}: must be in [0, 1)")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"train.ema_decay {self.ema_decay}: must be in [0, 1)")
        if len(self.betas) != 2:
            raise ConfigError("train.betas: give two numbers, e.g. [0.9, 0.9]")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ConfigError(f"train.prediction_type {self.prediction_type!r}: epsilon or v_prediction")
        if self.snr_gamma < 0:
            raise ConfigError(f"train.snr_gamma {self.snr_gamma}: must be >= 0 (0 = uniform weighting)")
        if not (math.isfinite(self.noise_offset) and self.noise_offset >= 0):
            raise ConfigError(f"train.noise_offset {self.noise_offset}: must be a finite number >= 0 "
                              "(0 = off; 0.05-0.1 is usual)")
        if self.truncated_snr and self.snr_gamma:
            raise ConfigError("train.truncated_snr and train.snr_gamma are two loss weightings; set one")
        if self.zero_terminal_snr and self.prediction_type != "v_prediction":
            raise ConfigError("train.zero_terminal_snr needs train.prediction_type=v_prediction "
                              "(epsilon is undefined at zero SNR)")


@dataclass
class SampleConfig:
    """Sampling defaults (paper: DPM-Solver++ 50 steps, guidance 2)."""

    sampler: Literal["dpm++", "ddim"] = "dpm++"
    steps: int = 50
    guidance: float = 2.0
    batch_size: int = 16
    grid_per_prompt: int = 4
    # start from noise carrying the training latents' signal leak (cxraug.diffusion.signal_leak;
    # fitted by stage 1 to the training split): the contrast a non-zero terminal SNR otherwise loses
    signal_leak: bool = False
    # dpm++ only: space the sampler's noise levels as Karras et al. (2022) do (diffusers'
    # use_karras_sigmas), more of them near the clean image, where fine detail is drawn, and the
    # last model call at the schedule's smallest noise instead of a jump from sigma ~0.2 to 0
    karras_sigmas: bool = False
    # map the images' coarse layout (a Gaussian blur of intensity_sigma px) to the training images'
    # intensity distribution (cxraug.diffusion.intensity): fitted at the end of cxraug train on
    # intensity_fit_n images drawn for training rows at these sampling settings; 0 px = pointwise.
    # intensity_estimator: pooled = all pixels of all images together (histogram matching);
    # per_image = the average of each image's own quantile function (matches per-image percentiles)
    intensity_match: bool = False
    intensity_sigma: float = 16.0
    intensity_fit_n: int = 256
    intensity_estimator: Literal["pooled", "per_image"] = "pooled"

    def validate(self) -> None:
        if self.steps < 1 or self.steps > 1000:
            raise ConfigError(f"sample.steps {self.steps}: must be between 1 and 1000")
        if not (math.isfinite(self.guidance) and self.guidance >= 0):
            raise ConfigError(f"sample.guidance {self.guidance}: must be a finite number >= 0 (1 = no guidance)")
        if not (math.isfinite(self.intensity_sigma) and self.intensity_sigma >= 0):
            raise ConfigError(f"sample.intensity_sigma {self.intensity_sigma}: must be a finite number "
                              ">= 0 (pixels at the model's image size; 0 = pointwise)")
        if self.intensity_fit_n < 2:
            raise ConfigError(f"sample.intensity_fit_n {self.intensity_fit_n}: must be at least 2")


@dataclass
class DiffCXRConfig:
    data: DataConfig = field(default_factory=DataConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    # ``decoder.steps`` > 0: sharpen the VAE's decoder after it is trained (encoder and latents
    # unchanged; cxraug.diffusion.decoder_tune). 0 = the paper (a frozen, untouched autoencoder).
    decoder: DecoderTuneConfig = field(default_factory=DecoderTuneConfig)
    text: TextConfig = field(default_factory=TextConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adapter: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1000, warmup_steps=100))
    sample: SampleConfig = field(default_factory=SampleConfig)

    def validate(self) -> None:
        if self.train.report_drop:
            raise ConfigError(f"train.report_drop {self.train.report_drop}: stage 1 has no disease "
                              "hint to keep; set adapter.report_drop instead")
        if not 0 <= self.adapter.report_drop < 1:
            raise ConfigError(f"adapter.report_drop {self.adapter.report_drop}: must be in [0, 1)")
        if self.sample.karras_sigmas and self.train.zero_terminal_snr:
            raise ConfigError("sample.karras_sigmas: needs a finite largest noise level; a "
                              "train.zero_terminal_snr model samples with the default spacing")
        if self.adapter.init_from:
            raise ConfigError("adapter.init_from: only stage 1 starts from another model "
                              "(train.init_from); the adapter is zero-initialised")
        if self.train.init_from and self.vae.pretrained:
            raise ConfigError("train.init_from: the run takes the source model's latent space; "
                              "leave vae.pretrained empty")
        if self.vae.image_size != self.data.image_size:
            raise ConfigError(f"vae.image_size {self.vae.image_size} differs from data.image_size "
                              f"{self.data.image_size}; set both")
        if self.decoder.steps and self.vae.pretrained:
            raise ConfigError("decoder.steps: decoder tuning is for cxraug's own single-channel VAE; "
                              f"the pretrained {self.vae.pretrained} keeps its decoder (set decoder.steps=0)")
        self.decoder.validate(self.vae.image_size, 2 ** (len(self.vae.block_out_channels) - 1))


#: ``--set`` overrides that train every stage in seconds on 32 px images: the tests' runs, the
#: byte-for-byte check (``benchmarks/golden.py``) and smoke runs, never a model worth using.
TINY = [
    "data.image_size=32", "data.prompts=paper", "vae.image_size=32", "vae.block_out_channels=[8, 16, 16]",
    "vae.steps=3", "vae.batch_size=4", "vae.scale_samples=8",
    "text.max_tokens=16", "text.cond_tokens=4", "text.epochs=1", "text.batch_size=4",
    "text.image_model=resnet10t", "text.image_size=32", "text.max_steps=2",
    "denoiser.preset=tiny", "train.steps=4", "train.batch_size=4", "train.log_every=1",
    "train.checkpoint_every=2", "train.sample_every=0", "train.warmup_steps=2",
    "adapter.steps=2", "adapter.batch_size=4", "adapter.log_every=1", "adapter.checkpoint_every=2",
    "adapter.sample_every=0", "sample.steps=3", "sample.grid_per_prompt=1",
]
