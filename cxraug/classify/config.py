"""The settings of a classifier training run (:func:`cxraug.classify.train.train_classifier`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cxraug.classify.augment import AugmentConfig
from cxraug.core import config as cfgio


@dataclass
class ClassifierConfig:
    """Everything a classifier training run needs besides its data."""

    arch: str = "resnet18"  # any timm model name
    image_size: int = 64
    drop_rate: float = 0.0
    pretrained: str | None = None  # local weights file/folder, or a timm/hub name to download
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50  # linear warm-up (capped at a tenth of the run), then cosine to 0
    max_epochs: int = 30
    max_steps: int = 0  # 0: max_epochs decides; otherwise whichever limit comes first
    eval_every: int = 0  # steps between validations; 0: once per epoch
    patience: int = 5  # validations without a better val mAUC before stopping; 0: never stop
    pos_weight: bool = False  # weight positives by neg/pos per label (train frequencies)
    num_workers: int = 0  # DataLoader workers reading uint8 batches
    in_memory: bool = False  # load all images as one tensor first (to time data loading)
    channels_last: bool = True
    device: str = "cpu"
    precision: str = "fp32"  # training forward/backward: fp32, bf16, or auto (bf16 where it is fast)
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self) -> None:
        for name in ("image_size", "batch_size", "eval_batch_size", "max_epochs"):
            if getattr(self, name) < 1:
                raise cfgio.ConfigError(f"{name}: must be >= 1")
        for name in ("max_steps", "eval_every", "patience", "num_workers", "warmup_steps"):
            if getattr(self, name) < 0:
                raise cfgio.ConfigError(f"{name}: must be >= 0")
        if not self.lr > 0:
            raise cfgio.ConfigError("lr: must be > 0")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise cfgio.ConfigError(f"precision {self.precision!r}: choose fp32, bf16 or auto")
        self.augment.validate()
