"""AVA-TLS: the information squeeze and the vision-aware contrastive tuning of the report encoder.

A report's ``N + 1`` hidden states (CLS + N tokens, width D) are squeezed to ``K + 1`` tokens by
two 1-D convolutions that treat the *token axis as channels* (Diff-CXR: 257 -> 78). Token 0 is
the global report embedding, aligned with an image embedding by a symmetric CLIP loss; tokens
1..K are the diffusion condition. After tuning, the encoder is frozen and its outputs cached
(:mod:`cxraug.text.cache`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from cxraug.core.artifacts import (
    WEIGHTS_NAME,
    Component,
    load_weights,
    read_config,
    register,
    save_component,
)
from cxraug.core.config import ConfigError
from cxraug.core.errors import WeightsError
from cxraug.core.progress import MetricsLog
from cxraug.data.transforms import uint8_to_classifier, uint8_to_model
from cxraug.text.encoders import build_text_encoder, state_dict_digest

CLIP_LOGIT_SCALE = 1.0 / 0.07


@register
class InformationSqueeze(Component):
    """``[B, N + 1, D]`` -> ``[B, K + 1, D]``: Conv1d(N+1 -> N+1) -> LN -> ReLU -> Conv1d(N+1 -> K+1)
    -> LN -> ReLU, kernel 3 along the feature axis, LayerNorm over D."""

    def __init__(self, max_tokens: int = 256, cond_tokens: int = 77, width: int = 768,
                 kernel_size: int = 3):
        super().__init__()
        self.save_args(locals())
        n, k, pad = max_tokens + 1, cond_tokens + 1, kernel_size // 2
        self.net = nn.Sequential(
            nn.Conv1d(n, n, kernel_size, padding=pad), nn.LayerNorm(width), nn.ReLU(),
            nn.Conv1d(n, k, kernel_size, padding=pad), nn.LayerNorm(width), nn.ReLU())

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(hidden)


@register
class ReportEncoder(Component):
    """Text encoder + information squeeze (+ a projection of token 0 to the image width).

    ``encode(texts)`` -> ``(global [B, global_dim or D], condition [B, K, D])``. The text
    encoder's weights are saved only when ``tuned``; otherwise they are re-read from
    ``encoder``/``encoder_path`` on load.
    """

    def __init__(self, encoder: str = "minilm", encoder_path: str | None = None,
                 max_tokens: int = 256, cond_tokens: int = 77, global_dim: int | None = None,
                 tuned: bool = False):
        super().__init__()
        self.save_args(locals())
        self.text = build_text_encoder(encoder, encoder_path, max_tokens)
        self.width, self.cond_tokens = self.text.width, cond_tokens
        self.squeeze = InformationSqueeze(max_tokens, cond_tokens, self.width)
        self.global_proj = nn.Linear(self.width, global_dim) if global_dim else nn.Identity()
        self._id: str | None = None

    def forward(self, tokens: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        squeezed = self.squeeze(self.text(tokens))  # [B, K + 1, D]
        return self.global_proj(squeezed[:, 0]), squeezed[:, 1:]

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Reports -> ``(global [B, D'], condition [B, K, D])``."""
        return self(self.text.tokenize(list(texts)))

    @property
    def encoder_id(self) -> str:
        """Hash of the text encoder identity and the squeeze/projection weights (cache key)."""
        if self._id is None:
            own = {k: v for k, v in self.state_dict().items() if not k.startswith("text.")}
            key = f"{self.text.encoder_id}|{state_dict_digest(own)}"
            self._id = hashlib.sha256(key.encode()).hexdigest()
        return self._id

    def _saved_state(self) -> dict[str, torch.Tensor]:
        sd = self.state_dict()
        keep = ("squeeze.", "global_proj.") + (("text.transformer.",) if self.args["tuned"] else ())
        return {k: v for k, v in sd.items() if k.startswith(keep)}

    def save_pretrained(self, folder: str | Path, meta: dict[str, Any] | None = None) -> Path:
        meta = {"width": self.width, "cond_tokens": self.cond_tokens,
                "max_tokens": self.text.max_tokens, "encoder_id": self.encoder_id} | (meta or {})
        return save_component(self, folder, meta, state_dict=self._saved_state())

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str | torch.device = "cpu",
                        encoder_path: str | None = None) -> ReportEncoder:
        """Reload a saved report encoder, frozen. ``encoder_path`` relocates the base weights."""
        folder = Path(folder)
        config = read_config(folder)
        if config.get("class") != cls.__name__:
            raise WeightsError(f"{folder}: holds a {config.get('class')}, expected a {cls.__name__}")
        args = dict(config["args"]) | ({"encoder_path": encoder_path} if encoder_path else {})
        model = cls(**args)
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            raise WeightsError(f"{folder}: {WEIGHTS_NAME} is missing")
        sd = load_weights(weights, map_location)
        expected = set(model._saved_state())
        if set(sd) != expected:
            missing, unexpected = sorted(expected - set(sd))[:3], sorted(set(sd) - expected)[:3]
            raise WeightsError(f"{weights}: weights do not fit this report encoder "
                               f"(missing {missing}, unexpected {unexpected})")
        model.load_state_dict(sd, strict=False)
        model.meta = config.get("meta", {})
        return model.to(map_location).freeze()

    def freeze(self) -> ReportEncoder:
        self.requires_grad_(False)
        self._id = None
        self.text._id = None
        return self.eval()


def clip_loss(text_emb: torch.Tensor, image_emb: torch.Tensor,
              logit_scale: float = CLIP_LOGIT_SCALE) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matched pairs ``[B, E]`` x ``[B, E]`` (cosine logits)."""
    logits = logit_scale * F.normalize(text_emb, dim=-1) @ F.normalize(image_emb, dim=-1).T
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


# ---------------------------------------------------------------------------- tuning


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


def _image_side(text_encoder, config: TextConfig) -> tuple[nn.Module, bool]:
    """``(image encoder [B, 1, H, W] -> [B, E], trainable?)``."""
    tower = text_encoder.image_tower() if config.image_encoder == "auto" else None
    if tower is not None:
        return tower.requires_grad_(False).eval(), False
    import timm

    net = timm.create_model(config.image_model, in_chans=1, num_classes=0, pretrained=False)
    net.out_dim = net.num_features
    return net, True


def train_text(report_texts: Sequence[str], images_uint8: np.ndarray, config: TextConfig,
               out_dir: str | Path | None = None, device: str | torch.device = "cpu",
               progress: bool = True) -> ReportEncoder:
    """Contrastively tune a report encoder on paired (report, image) data; returns it frozen.

    ``images_uint8``: ``uint8 [N, H, W]`` paired with ``report_texts`` (length N). Saves the
    report encoder (``config.json`` + ``model.safetensors``; text weights only if tuned) and, for
    a timm image side, ``image_encoder.safetensors`` into ``out_dir``; the loss of every step goes
    to ``out_dir/train_log.jsonl`` as it trains (``{"step": n, "loss": x}``, a
    :class:`~cxraug.core.progress.MetricsLog`).
    """
    from rich.progress import Progress

    # 1. Setup: models, what trains, optimiser.
    config.validate()
    if len(report_texts) != len(images_uint8) or len(report_texts) < 2:
        raise ValueError(f"need >= 2 paired reports and images, got {len(report_texts)} reports "
                         f"and {len(images_uint8)} images")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = ReportEncoder(config.encoder, config.encoder_path, config.max_tokens,
                              config.cond_tokens, None, tuned=config.tune != "squeeze")
        image_enc, image_trains = _image_side(model.text, config)
        # token 0 is projected to the image embedding width, known only now
        model.global_proj = nn.Linear(model.width, image_enc.out_dim)
        model.args["global_dim"] = int(image_enc.out_dim)
    model.text.set_trainable({"squeeze": None, "last": config.tune_last_layers, "all": 0}[config.tune])
    model.to(device).train()
    model.text.transformer.train(config.tune != "squeeze")  # frozen -> no dropout noise
    image_enc.to(device).train(image_trains)
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": config.lr}]
    if image_trains:
        groups.append({"params": list(image_enc.parameters()), "lr": config.image_lr})
    opt = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    tokens = model.text.tokenize(list(report_texts))
    images = torch.as_tensor(np.asarray(images_uint8))
    gen = torch.Generator().manual_seed(config.seed)
    n, bs = len(images), min(config.batch_size, len(images))
    per_epoch = n // bs
    total = per_epoch * config.epochs
    total = min(total, config.max_steps) if config.max_steps else total
    step, losses = 0, []
    log = MetricsLog(Path(out_dir) / "train_log.jsonl") if out_dir is not None else None
    if log is not None:
        log.resume(0)  # a new run replaces the curve of an earlier one
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("tuning report encoder", total=total)
        while step < total:
            for idx in torch.randperm(n, generator=gen)[:per_epoch * bs].view(per_epoch, bs):
                # 2. Forward: texts (grad only where tuned), images in the encoder's range.
                batch = {k: v[idx] for k, v in tokens.items()}
                with torch.set_grad_enabled(config.tune != "squeeze"):
                    hidden = model.text(batch)
                squeezed = model.squeeze(hidden)
                text_emb = model.global_proj(squeezed[:, 0])
                x = images[idx]
                if image_trains:
                    x = F.interpolate(uint8_to_classifier(x), size=(config.image_size,) * 2,
                                      mode="area")
                else:
                    x = uint8_to_model(x)
                with torch.set_grad_enabled(image_trains):
                    image_emb = image_enc(x.to(device))
                # 3. Symmetric CLIP loss with a fixed temperature, update.
                loss = clip_loss(text_emb, image_emb, config.logit_scale)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
                step += 1
                if log is not None:
                    log.write(step, loss=losses[-1])
                bar.update(task, advance=1, description=f"tuning report encoder, loss {losses[-1]:.3f}")
                if step >= total:
                    break
    # 4. Freeze and save.
    model.freeze()
    if out_dir is None:
        return model
    out_dir = Path(out_dir)
    tail = losses[-max(1, min(20, len(losses))):]
    model.save_pretrained(out_dir, {"train": {"steps": step, "final_loss": float(np.mean(tail)),
                                              "first_loss": losses[0] if losses else math.nan,
                                              "tune": config.tune}})
    if image_trains:
        save_file({k: v.contiguous() for k, v in image_enc.state_dict().items()},
                  str(out_dir / "image_encoder.safetensors"),
                  metadata={"timm_model": config.image_model, "in_chans": "1",
                            "image_size": str(config.image_size), "range": "classifier"})
    return ReportEncoder.from_pretrained(out_dir, map_location=device)
