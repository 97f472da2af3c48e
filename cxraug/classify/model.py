"""Multi-label chest X-ray classifiers: any timm architecture, one grey channel, local weights only.

A :class:`Classifier` wraps ``timm.create_model(arch, in_chans=1, num_classes=len(label_names))``
and is saved like every cxraug component (``config.json`` + ``model.safetensors``, see
:mod:`cxraug.core.artifacts`). Its ``meta`` records what a user needs to feed it: the label order,
the image size and the pixel normalisation of :func:`cxraug.data.transforms.uint8_to_classifier`.

Inputs are ``uint8 [N, H, W]`` arrays (a ``np.memmap`` works: it is read one batch at a time);
outputs are per-label probabilities ``float32 [N, L]`` or penultimate features ``float32 [N, D]``
(for FID-like distances and memorisation checks).

Initialisation (``pretrained``): nothing is downloaded unless the user names weights to download.

* ``None``: random (timm's default init);
* a local ``.safetensors`` file, or a ``.pth`` / ``.bin`` checkpoint read only with
  ``torch.load(weights_only=True)`` (no pickled code runs), or a folder holding one (a timm /
  Hugging Face model folder, or a saved cxraug ``Classifier`` whose head is dropped, so its label
  set may differ);
* a timm pretrained name (``resnet18.a1_in1k``; the bare arch means timm's default tag) or a
  Hugging Face Hub id (``hf-hub:owner/name`` or ``owner/name``), downloaded by timm because the
  user asked for it. Offline, a name that is not cached fails with one line saying how to pass
  the file instead.

Three-channel weights are adapted to the one grey channel by timm (``in_chans=1`` sums the first
convolution over its input channels); the classification head is always re-initialised.
:func:`init_name` is what results record: ``"random"``, the name, or ``sha256:<16 hex>`` of the
weights file.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from timm.models import get_pretrained_cfg

from cxraug.core.artifacts import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    Component,
    load_weights,
    register,
    torch_load_plain,
)
from cxraug.core.errors import CxraugError, WeightsError
from cxraug.data import transforms
from cxraug.data.labels import OBSERVATIONS, canonical

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


WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_PREFERRED_FILES = ("model.safetensors", "pytorch_model.bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_LOCAL_HINT = "--pretrained path/to/weights.safetensors (or a .pth/.bin file or model folder)"


def pretrained_kind(pretrained: str) -> tuple[str, str]:
    """``(kind, reference)`` of a ``pretrained`` value: ``"local"`` (an existing path, or one that
    names a weights file), ``"hub"`` (``hf-hub:owner/name`` or ``owner/name``) or ``"timm"``."""
    text = str(pretrained).strip()
    if text.startswith("hf-hub:"):
        return "hub", text.removeprefix("hf-hub:")
    p = Path(text).expanduser()
    if p.exists() or text.lower().endswith(WEIGHT_SUFFIXES) or text.startswith((".", "/", "~")):
        return "local", str(p)
    if _HUB_ID.match(text):
        return "hub", text
    return "timm", text


def weights_file(path: str | Path) -> Path:
    """The weights file of a local ``pretrained`` value (a file, or the one in a folder)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise WeightsError(f"pretrained weights {p}: not found; pass a local .safetensors/.pth/.bin "
                           f"file or model folder, or a timm pretrained name such as resnet18.a1_in1k")
    if p.is_file():
        return p
    for name in _PREFERRED_FILES:
        if (p / name).is_file():
            return p / name
    for suffix in WEIGHT_SUFFIXES:
        found = sorted(p.glob(f"*{suffix}"))
        if found:
            return found[0]
    raise WeightsError(f"{p}: no weights file (.safetensors, .pth, .bin) in this folder")


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file; ``.pth``/``.bin`` only through ``torch.load(weights_only=True)``
    (a checkpoint that needs pickled code is refused), unwrapped from ``{"state_dict": ...}``."""
    fix = "pass a .safetensors file or a plain tensor checkpoint (torch.load(weights_only=True))"
    try:
        sd: Any = (load_weights(path) if path.suffix == ".safetensors"
                   else torch_load_plain(path))
    except WeightsError as e:  # one line naming the file and what it holds
        raise WeightsError(f"{e}; {fix}") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _pretrained_overlay(path: str, arch: str) -> dict[str, Any]:
    """timm ``pretrained_cfg_overlay`` that loads local weights from ``path`` (never a download);
    the head (``num_classes=-1``) is always dropped: it was trained for other labels."""
    p = Path(path).expanduser()
    config = p / CONFIG_NAME
    if p.is_dir() and config.is_file():
        saved = json.loads(config.read_text())
        if saved.get("class") == "Classifier":  # a cxraug classifier: strip our "net." prefix
            if saved["args"].get("arch") != arch:
                raise WeightsError(f"{p}: holds a {saved['args'].get('arch')} classifier, "
                                   f"not {arch}; set arch to match")
            sd = load_file(str(p / WEIGHTS_NAME))
            sd = {k.removeprefix("net."): v for k, v in sd.items()}
            return {"state_dict": sd, "source": "", "num_classes": -1}
    return {"state_dict": load_state_dict_file(weights_file(p)), "source": "", "num_classes": -1}


def init_name(pretrained: bool | str | None) -> str:
    """How a classifier is initialised, for results: ``"random"``, the timm/hub name, or
    ``sha256:<16 hex>`` of the local weights file (a path alone would not identify them)."""
    if not pretrained:
        return "random"
    kind, ref = pretrained_kind(str(pretrained))
    if kind == "hub":
        return f"hf-hub:{ref}"
    if kind == "timm":
        return ref
    h = hashlib.sha256()
    with weights_file(ref).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()[:16]}"


def _timm_source(pretrained: str, arch: str) -> tuple[str, dict[str, Any]]:
    """``(model name for timm.create_model, extra kwargs)`` that load ``pretrained`` into ``arch``."""
    from timm.models import is_model_pretrained, split_model_name_tag

    kind, ref = pretrained_kind(pretrained)
    if kind == "local":
        return arch, {"pretrained_cfg_overlay": _pretrained_overlay(ref, arch)}
    if kind == "hub":
        return arch, {"pretrained_cfg_overlay": {"hf_hub_id": ref, "source": "hf-hub"}}
    base, _ = split_model_name_tag(ref)
    if base != arch:
        raise WeightsError(f"pretrained {ref!r}: not a local file, and as a timm name it is for "
                           f"{base!r}, not the classifier arch {arch!r}; pass --arch {base} or "
                           f"a name from timm.list_pretrained('{arch}*')")
    if not is_model_pretrained(ref):
        raise WeightsError(f"pretrained {ref!r}: timm has no such pretrained weights; pick one of "
                           f"timm.list_pretrained('{arch}*') or pass {_LOCAL_HINT}")
    return ref, {}


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
        pretrained: ``False``/``None`` for random init, a local weights path, or a timm/hub
            name to download (see module doc). ``True`` alone is refused: name what to download.
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
            raise WeightsError(f"pretrained=True for {arch}: cxraug never downloads weights unless "
                               f"named; pass a timm pretrained name (e.g. {arch}), a hub id, or "
                               f"the path of a local .safetensors file or model folder")
        name, kwargs = _timm_source(str(pretrained), arch) if pretrained else (arch, {})
        kwargs["drop_rate"] = drop_rate
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        default_cfg = get_pretrained_cfg(arch)
        if default_cfg is not None and default_cfg.fixed_input_size:  # ViT-like: size is baked in
            kwargs["img_size"] = image_size
        self.net = self._create(name, bool(pretrained), len(label_names), kwargs, pretrained, arch)
        # The saved folder already holds the weights: reloading it must not need the original
        # pretrained file, so it is kept in meta only.
        self.args["pretrained"] = None
        self.label_names = label_names
        self.image_size = int(image_size)
        self.meta: dict[str, Any] = {"pretrained_from": str(pretrained) if pretrained else None,
                                     "init": init_name(pretrained)}

    @staticmethod
    def _create(name: str, pretrained: bool, num_classes: int, kwargs: dict[str, Any],
                source: Any, arch: str) -> torch.nn.Module:
        """``timm.create_model`` with one-line errors for weights that cannot be had or loaded."""
        try:
            return timm.create_model(name, pretrained=pretrained, in_chans=1,
                                     num_classes=num_classes, **kwargs)
        except RuntimeError as e:
            if not pretrained:
                raise
            raise WeightsError(f"pretrained weights {source}: cannot load into {arch} "
                               f"({str(e).splitlines()[0]})") from e
        except Exception as e:  # network, offline hub cache miss, gated repo...
            if not pretrained or pretrained_kind(str(source))[0] == "local":
                raise
            first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
            raise WeightsError(f"pretrained {source}: downloading the weights failed ({first}); "
                               f"offline, download them where there is internet and pass the "
                               f"file: {_LOCAL_HINT}") from None

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
            "init": self.meta.get("init", "random"),
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
            # a copy: a read-only memmap slice would make torch warn on every call
            x = to_model_range(np.array(images[start:start + batch_size]), self.image_size)
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


def check_pretrained(pretrained: str | None, arch: str, image_size: int = 64) -> str:
    """Build ``arch`` with ``pretrained`` once, so that weights which cannot be had or loaded fail
    (one line) before any training; returns :func:`init_name` for the results."""
    check_arch(arch)
    if pretrained:
        Classifier(arch, [OBSERVATIONS[0]], image_size, pretrained=pretrained)
    return init_name(pretrained)
