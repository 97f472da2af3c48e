"""Multi-label chest X-ray classifiers: any timm architecture, one grey channel, local weights only.

A :class:`Classifier` wraps ``timm.create_model(arch, in_chans=1, num_classes=len(label_names))``
and is saved like every cxraug component (``config.json`` + ``model.safetensors``, see
:mod:`cxraug.models.io`). Its ``meta`` records what a user needs to feed it: the label order,
the image size and the pixel normalisation of :func:`cxraug.data.transforms.uint8_to_classifier`.

Inputs are ``uint8 [N, H, W]`` arrays (a ``np.memmap`` works: it is read one batch at a time);
outputs are per-label probabilities ``float32 [N, L]`` or penultimate features ``float32 [N, D]``
(for FID-like distances and memorisation checks).

Pretrained weights are never downloaded: ``pretrained`` is a local ``.safetensors`` / ``.pth``
file, a timm/Hugging Face model folder, or a saved cxraug ``Classifier`` folder (its head is
dropped, so its label set may differ).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from timm.models import get_pretrained_cfg

from cxraug.data import transforms
from cxraug.data.labels import OBSERVATIONS, canonical
from cxraug.errors import CxraugError, WeightsError
from cxraug.models.io import CONFIG_NAME, WEIGHTS_NAME, Component, register

# Architectures suggested in error messages (all small enough to train on a CPU).
SUGGESTED_ARCHS = ("resnet10t", "resnet18", "resnet50", "densenet121", "efficientnet_b0",
                   "convnext_nano", "mobilenetv3_large_100")


class UnknownArchError(CxraugError, ValueError):
    """A classifier architecture name that timm does not know."""


def check_arch(arch: str) -> None:
    """Raise :class:`UnknownArchError` naming close matches if timm has no model ``arch``."""
    if timm.is_model(arch):
        return
    close = difflib.get_close_matches(arch, timm.list_models(), n=6, cutoff=0.6)
    close = close or list(SUGGESTED_ARCHS)
    raise UnknownArchError(f"classifier arch {arch!r} is not a timm model; try one of: "
                           f"{', '.join(close)} (full list: timm.list_models())")


def _pretrained_overlay(path: str, arch: str) -> dict[str, Any]:
    """timm ``pretrained_cfg_overlay`` that loads local weights from ``path`` (never a download)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise WeightsError(f"pretrained weights {p}: not found; pass a local .safetensors file or "
                           f"model folder (cxraug never downloads weights)")
    config = p / CONFIG_NAME
    if p.is_dir() and config.is_file():
        saved = json.loads(config.read_text())
        if saved.get("class") == "Classifier":  # a cxraug classifier: strip our "net." prefix
            if saved["args"].get("arch") != arch:
                raise WeightsError(f"{p}: holds a {saved['args'].get('arch')} classifier, "
                                   f"not {arch}; set arch to match")
            sd = load_file(str(p / WEIGHTS_NAME))
            sd = {k.removeprefix("net."): v for k, v in sd.items()}
            return {"state_dict": sd, "source": "", "num_classes": -1}  # -1: always drop the head
    if p.is_dir():
        return {"source": "local-dir", "file": str(p)}
    return {"source": "", "file": str(p)}


def to_model_range(images: torch.Tensor | np.ndarray, size: int) -> torch.Tensor:
    """``uint8 [B, H, W]`` -> generator range ``float32 [B, 1, size, size]``.

    Square images of another size are resized in torch (bilinear, antialiased) so that training
    batches and prediction batches go through the same resize; non-square images are first
    padded to a square by :func:`cxraug.data.transforms.resize_square` (aspect preserved).
    """
    images = torch.as_tensor(np.asarray(images)) if not torch.is_tensor(images) else images
    if images.ndim != 3 or images.dtype != torch.uint8:
        raise CxraugError(f"classifier input: expected uint8 [N, H, W] images, got "
                          f"{images.dtype} {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if h != w:
        images = torch.from_numpy(np.stack([transforms.resize_square(im, size)
                                            for im in images.numpy()]))
    x = transforms.uint8_to_model(images)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    return x


@register
class Classifier(Component):
    """A timm network with one input channel and one logit per label.

    Args:
        arch: any ``timm`` model name (``timm.list_models()``), e.g. ``"resnet18"``.
        label_names: observations in :data:`cxraug.data.labels.OBSERVATIONS` order (aliases are
            canonicalised; order must follow OBSERVATIONS so columns line up across datasets).
        image_size: side of the square ``uint8`` images the model is trained on.
        drop_rate: dropout before the classifier head; ``drop_path_rate``: stochastic depth
            (for architectures that support it).
        pretrained: ``False``/``None`` for random init, or a local weights path (see module doc).
            ``True`` alone is refused: there is nothing to download from here.
    """

    def __init__(self, arch: str, label_names: Sequence[str], image_size: int = 64,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 pretrained: bool | str | None = None) -> None:
        super().__init__()
        label_names = [canonical(n) for n in label_names]
        self.save_args(locals())
        order = [OBSERVATIONS.index(n) for n in label_names]
        if order != sorted(set(order)):
            raise CxraugError(f"classifier labels {label_names} must be distinct and in "
                              f"OBSERVATIONS order")
        check_arch(arch)
        if pretrained is True:
            raise WeightsError(f"pretrained=True for {arch}: cxraug never downloads weights; pass "
                               f"the path of a local .safetensors file or model folder instead")
        kwargs: dict[str, Any] = {"drop_rate": drop_rate}
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        default_cfg = get_pretrained_cfg(arch)
        if default_cfg is not None and default_cfg.fixed_input_size:  # ViT-like: size is baked in
            kwargs["img_size"] = image_size
        if pretrained:
            kwargs["pretrained_cfg_overlay"] = _pretrained_overlay(str(pretrained), arch)
        try:
            self.net = timm.create_model(arch, pretrained=bool(pretrained), in_chans=1,
                                         num_classes=len(label_names), **kwargs)
        except (RuntimeError, FileNotFoundError) as e:
            if not pretrained:
                raise
            raise WeightsError(f"pretrained weights {pretrained}: cannot load into {arch} "
                               f"({str(e).splitlines()[0]})") from e
        # The saved folder already holds the weights: reloading it must not need the original
        # pretrained file, so it is kept in meta only.
        self.args["pretrained"] = None
        self.label_names = label_names
        self.image_size = int(image_size)
        self.meta: dict[str, Any] = {"pretrained_from": str(pretrained) if pretrained else None}

    # ------------------------------------------------------------------------------ artifact

    def default_meta(self) -> dict[str, Any]:
        """What a user needs to feed this model: labels, size and pixel normalisation."""
        return {
            "label_names": list(self.label_names),
            "image_size": self.image_size,
            "input": "uint8 [N, H, W] grayscale -> cxraug.data.transforms.uint8_to_classifier",
            "pixel_mean": transforms.CLASSIFIER_MEAN,
            "pixel_std": transforms.CLASSIFIER_STD,
            "output": "sigmoid probabilities float32 [N, L], one column per label_names entry",
            "pretrained_from": self.meta.get("pretrained_from"),
        }

    def save_pretrained(self, folder: str | Path, meta: dict[str, Any] | None = None) -> Path:
        merged = {**self.meta, **self.default_meta(), **(meta or {})}
        return super().save_pretrained(folder, merged)

    # ------------------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classifier-range ``float32 [B, 1, H, W]`` -> logits ``[B, L]``."""
        return self.net(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Classifier-range ``[B, 1, H, W]`` -> pooled penultimate features ``[B, D]``."""
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)

    @property
    def num_features(self) -> int:
        # pre-logits width: a head's hidden layer (MobileNetV3, ConvNeXt) can widen the pooled features
        return int(getattr(self.net, "head_hidden_size", None) or self.net.num_features)

    def _batches(self, images: np.ndarray, batch_size: int):
        """Yield classifier-range batches from ``uint8 [N, H, W]`` (resized if not image_size)."""
        if images.ndim != 3 or images.dtype != np.uint8:
            raise CxraugError(f"classifier input: expected uint8 [N, H, W] images, got "
                              f"{images.dtype} {tuple(images.shape)}")
        device = next(self.parameters()).device
        for start in range(0, len(images), batch_size):
            x = to_model_range(np.asarray(images[start:start + batch_size]), self.image_size)
            x = transforms.model_to_classifier(x).to(device)
            yield x.contiguous(memory_format=torch.channels_last)

    def _run(self, fn, images: np.ndarray, batch_size: int, width: int) -> np.ndarray:
        was_training = self.training
        self.eval()
        out = np.empty((len(images), width), dtype=np.float32)
        with torch.inference_mode():
            start = 0
            for x in self._batches(images, batch_size):
                y = fn(x).float().cpu().numpy()
                out[start:start + len(y)] = y
                start += len(y)
        self.train(was_training)
        return out

    def predict_proba(self, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """``uint8 [N, H, W]`` -> probabilities ``float32 [N, L]`` in ``label_names`` order."""
        return self._run(lambda x: torch.sigmoid(self(x)), images, batch_size, len(self.label_names))

    def embed(self, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """``uint8 [N, H, W]`` -> penultimate features ``float32 [N, num_features]``."""
        return self._run(self.features, images, batch_size, self.num_features)
