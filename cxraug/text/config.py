"""The report encoder's settings and its contrastive tuning (:class:`TextConfig`), a section of
the Diff-CXR recipe (:class:`~cxraug.diffusion.config.DiffCXRConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cxraug.core.config import ConfigError

#: CLIP's fixed temperature 0.07, as a logit scale.
CLIP_LOGIT_SCALE = 1.0 / 0.07


@dataclass
class TextConfig:
    """The report encoder and its contrastive tuning (paper: BiomedCLIP, K=77, whole encoder tuned,
    AdamW 1e-5, 30 epochs, batch 128; the CPU default tunes the squeeze only on MiniLM).

    ``tune``: ``squeeze`` (squeeze + projection), ``last`` (also the last ``tune_last_layers``
    transformer blocks) or ``all``. ``image_encoder``: ``auto`` uses the text encoder's own image
    tower (BiomedCLIP, kept frozen) if it has one, else a timm ``image_model`` trained alongside
    from scratch on ``image_size`` inputs; ``timm`` forces the latter.
    """

    encoder: str = "minilm"
    encoder_path: str | None = None
    max_tokens: int = 256
    cond_tokens: int = 77
    tune: Literal["squeeze", "last", "all"] = "squeeze"
    tune_last_layers: int = 1
    image_encoder: Literal["auto", "timm"] = "auto"
    image_model: str = "resnet18"
    image_size: int = 64
    epochs: int = 5
    max_steps: int = 0
    batch_size: int = 32
    lr: float = 1e-5
    image_lr: float = 1e-4
    weight_decay: float = 0.01
    logit_scale: float = CLIP_LOGIT_SCALE
    seed: int = 0

    def validate(self) -> None:
        if self.cond_tokens < 1 or self.max_tokens < 1:
            raise ConfigError("text.cond_tokens and text.max_tokens must be positive (paper: 77 and 256)")
        if self.batch_size < 2:
            raise ConfigError("text.batch_size: a contrastive loss needs at least 2 pairs per batch")
