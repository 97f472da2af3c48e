"""A perceptual distance for training the latent space: LPIPS's recipe on a chest X-ray classifier.

LPIPS (Zhang et al. 2018) compares two images by the feature maps of a frozen network: each
feature vector is unit-normalised over its channels, and the squared differences are summed over
channels and averaged over positions and layers. LDM trains its autoencoders with it beside L1
and the adversarial term. LPIPS's own networks are ImageNet VGG/AlexNet with learned channel
weights, which an offline CPU run does not have; here the network is a cxraug classifier trained
on the generator's training split (``cxraug train classifier``), the channel weights are all 1,
and per layer the distance is ``|u(x) - u(y)|^2 = 2 (1 - cos)`` of the unit feature vectors, in
[0, 4]. It is 0 for identical images and grows as detail is lost (blur, smoothing).

:class:`PerceptualLoss` reads a classifier folder (``config.json`` + ``model.safetensors`` of
:class:`cxraug.classify.model.Classifier`, or a ``cxraug train classifier`` run folder holding
it in ``model/``) and builds the same timm network from it directly: cxraug.models sits below
cxraug.classify in the package layering. The feature maps are those timm lists in
``feature_info`` down to stride :data:`MAX_REDUCTION` (resnet18: act1, layer1, layer2, layer3);
the forward pass stops after the last of them. The network is frozen and in eval mode.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from cxraug.core.artifacts import CONFIG_NAME, WEIGHTS_NAME, load_weights, read_json
from cxraug.core.config import ConfigError
from cxraug.core.errors import WeightsError
from cxraug.data.transforms import model_to_classifier

#: The deepest feature maps used: stride 16 (a 64 px crop still gives 4 x 4 positions there).
MAX_REDUCTION = 16


class _Enough(Exception):
    """Raised by the hook of the deepest layer used: nothing after it needs computing."""


def classifier_folder(path: str | Path, key: str) -> Path:
    """The classifier folder that ``path`` names (a ``cxraug train classifier`` run folder gives
    its ``model/``), or a one-line :class:`ConfigError` naming the setting ``key``."""
    p = Path(path).expanduser()
    fix = (f"set {key} to the folder of a classifier trained on the training split "
           f"(cxraug train classifier --data DATA --out DIR; then {key}=DIR)")
    if not str(path).strip():
        raise ConfigError(f"{key}: empty; {fix}")
    if not (p / CONFIG_NAME).is_file() and (p / "model" / CONFIG_NAME).is_file():
        p = p / "model"
    if not p.is_dir():
        raise ConfigError(f"{key} {path}: no such folder; {fix}")
    if not (p / CONFIG_NAME).is_file():
        raise ConfigError(f"{key} {path}: no {CONFIG_NAME}, not a classifier folder; {fix}")
    try:
        kind = read_json(p / CONFIG_NAME).get("class")
    except (WeightsError, AttributeError):
        kind = None
    if kind != "Classifier":
        raise ConfigError(f"{key} {path}: holds {kind or 'no cxraug component'}, not a Classifier; {fix}")
    if not (p / WEIGHTS_NAME).is_file():
        raise ConfigError(f"{key} {path}: {WEIGHTS_NAME} is missing; {fix}")
    return p


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()[:16]}"


class PerceptualLoss(nn.Module):
    """``loss(x, y)``: mean LPIPS-style distance between image batches ``[B, 1, H, W]`` in the
    generator range [-1, 1] (``x`` is differentiated through, ``y`` is the target), a scalar.

    ``net``: a timm network with one input channel; ``modules``: names of its submodules whose
    outputs ``[B, C, h, w]`` are compared, in the order the forward pass reaches them.
    """

    def __init__(self, net: nn.Module, modules: list[str], info: dict[str, Any] | None = None):
        super().__init__()
        if not modules:
            raise ValueError("PerceptualLoss needs at least one feature layer")
        self.net, self.modules_used = net, list(modules)
        self.info = dict(info or {})
        self._feats: list[torch.Tensor] = []
        for i, name in enumerate(self.modules_used):
            last = i == len(self.modules_used) - 1
            net.get_submodule(name).register_forward_hook(self._hook(name, last))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> PerceptualLoss:
        """Always eval mode (BatchNorm statistics and dropout of the classifier stay fixed)."""
        return super().train(False)

    def _hook(self, name: str, last: bool):
        def hook(module, inputs, out):
            if not torch.is_tensor(out) or out.ndim != 4:
                raise ConfigError(f"perceptual net: layer {name} gives {type(out).__name__} "
                                  f"{tuple(getattr(out, 'shape', ()))}, not a feature map [B, C, h, w]; "
                                  "use a convolutional classifier (resnet18, resnet10t, efficientnet_b0)")
            # Unit-normalise every position's channel vector (LPIPS's normalize_tensor).
            out = out.float()
            self._feats.append(out / (out.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
            if last:
                raise _Enough
        return hook

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised feature maps of generator-range images ``[B, 1, H, W]``."""
        self._feats = []
        try:
            self.net.forward_features(model_to_classifier(x))
        except _Enough:
            pass
        feats, self._feats = self._feats, []
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"perceptual loss: expected two [B, 1, H, W] batches, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        with torch.no_grad():
            target = self.features(y)
        dists = [(f - t).pow(2).sum(1).mean() for f, t in zip(self.features(x), target)]
        return torch.stack(dists).mean()

    @classmethod
    def from_classifier(cls, path: str | Path, key: str = "perceptual_net",
                        max_reduction: int = MAX_REDUCTION) -> PerceptualLoss:
        """The distance on a saved cxraug classifier's feature maps (see the module doc);
        ``key`` names the setting in errors (``vae.perceptual_net``)."""
        folder = classifier_folder(path, key)
        args = read_json(folder / CONFIG_NAME)["args"]
        arch = str(args.get("arch", ""))
        if not timm.is_model(arch):
            raise ConfigError(f"{key} {path}: classifier arch {arch!r} is not a timm model")
        kwargs = {}
        pretrained_cfg = timm.models.get_pretrained_cfg(arch)
        if pretrained_cfg is not None and pretrained_cfg.fixed_input_size:
            kwargs["img_size"] = int(args.get("image_size", 64))
        with torch.random.fork_rng(devices=[]):  # its random init is overwritten; keep the caller's RNG
            net = timm.create_model(arch, pretrained=False, in_chans=1,
                                    num_classes=len(args.get("label_names", [])), **kwargs)
        sd = {k.removeprefix("net."): v for k, v in load_weights(folder / WEIGHTS_NAME).items()}
        missing, unexpected = net.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ConfigError(f"{key} {path}: its weights do not fit a {arch} (missing {missing[:2]}, "
                              f"unexpected {unexpected[:2]}); retrain it with cxraug train classifier")
        modules = [i["module"] for i in getattr(net, "feature_info", [])
                   if int(i.get("reduction", 1)) <= max_reduction]
        if not modules:
            raise ConfigError(f"{key} {path}: a {arch} lists no feature maps (timm feature_info); "
                              "use a convolutional classifier such as resnet18")
        # What the trained model's meta records: the folder as given (only its name when it is
        # absolute: no machine's paths in shipped files), the network and its weights' digest.
        source = Path(str(path)).name if Path(str(path)).is_absolute() else str(path)
        info = {"net": source, "arch": arch, "weights": _digest(folder / WEIGHTS_NAME), "layers": modules,
                "image_size": args.get("image_size"), "labels": list(args.get("label_names", []))}
        return cls(net, modules, info)
