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
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from cxraug.core.artifacts import Component, register, save_component
from cxraug.core.progress import MetricsLog
from cxraug.core.training import EpochReplay, TrainState
from cxraug.data.transforms import uint8_to_classifier, uint8_to_model
from cxraug.text.config import CLIP_LOGIT_SCALE, TextConfig
from cxraug.text.encoders import build_text_encoder, state_dict_digest

#: Steps between two checkpoints of :func:`train_text` (when it is given a folder for them).
CHECKPOINT_EVERY = 250


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

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load a saved state (:meth:`_saved_state`: the squeeze and projection, and the text
        weights only when tuned); the untuned base text weights come from the encoder itself."""
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        saved = set(self._saved_state())
        missing = [k for k in result.missing_keys if k in saved]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"report encoder state: missing {missing[:3]}, "
                               f"unexpected {result.unexpected_keys[:3]}")
        return type(result)(missing, result.unexpected_keys)

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> ReportEncoder:
        """Reload a saved report encoder (:func:`~cxraug.core.artifacts.load_component`), frozen."""
        return super().from_pretrained(folder, map_location).to(map_location).freeze()

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
               progress: bool = True, checkpoints: str | Path | None = None,
               checkpoint_every: int = CHECKPOINT_EVERY,
               max_steps: int | None = None) -> ReportEncoder | None:
    """Contrastively tune a report encoder on paired (report, image) data; returns it frozen.

    ``images_uint8``: ``uint8 [N, H, W]`` paired with ``report_texts`` (length N). Saves the
    report encoder (``config.json`` + ``model.safetensors``; text weights only if tuned) and, for
    a timm image side, ``image_encoder.safetensors`` into ``out_dir``; the loss of every step goes
    to ``out_dir/train_log.jsonl`` as it trains (``{"step": n, "loss": x}``, a
    :class:`~cxraug.core.progress.MetricsLog`).

    ``checkpoints``: a folder for the training state every ``checkpoint_every`` steps (and at the
    last); a rerun with the same arguments resumes from its newest intact checkpoint and ends
    with the uninterrupted run's weights (:mod:`cxraug.core.training`). ``max_steps`` stops after
    that many steps without changing the schedule (``config.max_steps`` does; this simulates an
    interruption in tests) and returns None.
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
    n, bs = len(images), min(config.batch_size, len(images))
    per_epoch = n // bs
    total = per_epoch * config.epochs
    total = min(total, config.max_steps) if config.max_steps else total
    # 2. Data order (a seeded permutation per epoch) and resume: the checkpoint holds what
    #    trains (the frozen text weights stay out), the epoch in progress and the RNG states
    #    (dropout of a tuned encoder draws from torch's global generator).
    gen = torch.Generator().manual_seed(config.seed)
    order = EpochReplay(lambda: torch.randperm(n, generator=gen)[:per_epoch * bs].view(per_epoch, bs), gen)
    trained = {f"encoder.{k}" for k in model._saved_state()}
    state = TrainState(nn.ModuleDict({"encoder": model, "image": image_enc}), opt, order=order,
                       global_rng=True, extra={"first_loss": None, "losses": []},
                       keys=lambda k: k in trained or (image_trains and k.startswith("image.")))
    step = state.resume(checkpoints) if checkpoints is not None else 0
    first, losses = state.extra["first_loss"], list(state.extra["losses"])
    log = MetricsLog(Path(out_dir) / "train_log.jsonl") if out_dir is not None else None
    if log is not None:
        log.resume(step)  # a new run replaces the curve of an earlier one
    stop = total if max_steps is None else min(total, max_steps)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("tuning report encoder", total=total, completed=step)
        while step < stop:
            # 3. Forward: texts (grad only where tuned), images in the encoder's range.
            idx = order.next()
            batch = {k: v[idx] for k, v in tokens.items()}
            with torch.set_grad_enabled(config.tune != "squeeze"):
                hidden = model.text(batch)
            squeezed = model.squeeze(hidden)
            text_emb = model.global_proj(squeezed[:, 0])
            x = images[idx]
            if image_trains:
                x = F.interpolate(uint8_to_classifier(x), size=(config.image_size,) * 2, mode="area")
            else:
                x = uint8_to_model(x)
            with torch.set_grad_enabled(image_trains):
                image_emb = image_enc(x.to(device))
            # 4. Symmetric CLIP loss with a fixed temperature, update, log, checkpoint.
            loss = clip_loss(text_emb, image_emb, config.logit_scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            first = losses[0] if first is None else first
            step += 1
            if log is not None:
                log.write(step, loss=losses[-1])
            bar.update(task, advance=1, description=f"tuning report encoder, loss {losses[-1]:.3f}")
            if checkpoints is not None and (step % checkpoint_every == 0 or step == total):
                state.extra.update(first_loss=first, losses=losses[-20:])
                state.save(checkpoints, step, keep=2)
    if step < total:
        return None
    # 5. Freeze and save.
    model.freeze()
    if out_dir is None:
        return model
    out_dir = Path(out_dir)
    tail = losses[-max(1, min(20, len(losses))):]
    model.save_pretrained(out_dir, {"train": {"steps": step, "final_loss": float(np.mean(tail)),
                                              "first_loss": math.nan if first is None else first,
                                              "tune": config.tune}})
    if image_trains:
        save_file({k: v.contiguous() for k, v in image_enc.state_dict().items()},
                  str(out_dir / "image_encoder.safetensors"),
                  metadata={"timm_model": config.image_model, "in_chans": "1",
                            "image_size": str(config.image_size), "range": "classifier"})
    return ReportEncoder.from_pretrained(out_dir, map_location=device)
