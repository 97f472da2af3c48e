"""Model artifacts: a component is its constructor arguments saved beside its weights.

Every trainable component (VAE wrapper, report encoder + squeeze, denoiser, disease adapter,
classifier) is saved as one folder::

    folder/config.json        {"class": "UViT", "args": {...constructor...}, "meta": {...}}
    folder/model.safetensors  the state dict of the unwrapped, uncompiled module

``meta`` carries what a user needs to feed the component: label order, image size, pixel range,
latent scale. Loading needs that folder alone, and never unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from cxraug.core.errors import WeightsError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

_REGISTRY: dict[str, type[nn.Module]] = {}


def register(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: make ``cls`` loadable by name from a component folder."""
    _REGISTRY[cls.__name__] = cls
    return cls


class Component(nn.Module):
    """Base for saveable modules: subclasses call ``self.save_args(locals())`` in ``__init__``."""

    args: dict[str, Any]

    def save_args(self, local_vars: dict[str, Any]) -> None:
        self.args = {k: v for k, v in local_vars.items() if k not in ("self", "__class__")}

    def save_pretrained(self, folder: str | Path, meta: dict[str, Any] | None = None) -> Path:
        return save_component(self, folder, meta)

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str | torch.device = "cpu"):
        model = load_component(folder, map_location)
        if not isinstance(model, cls):
            raise WeightsError(f"{folder}: holds a {type(model).__name__}, expected a {cls.__name__}")
        return model


def unwrap(module: nn.Module) -> nn.Module:
    """Strip DDP/accelerate and torch.compile wrappers before saving."""
    while True:
        if hasattr(module, "_orig_mod"):
            module = module._orig_mod
        elif hasattr(module, "module") and isinstance(module.module, nn.Module):
            module = module.module
        else:
            return module


def save_component(module: nn.Module, folder: str | Path, meta: dict[str, Any] | None = None,
                   state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` for a :class:`Component` into ``folder``.

    Files are written to temporaries and renamed, so an interrupted save never leaves a
    half-written component.
    """
    module = unwrap(module)
    if not hasattr(module, "args"):
        raise TypeError(f"{type(module).__name__} does not record its constructor args")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = state_dict if state_dict is not None else module.state_dict()
    sd = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    config = {"class": type(module).__name__, "args": module.args, "meta": meta or {}}
    tmp_w, tmp_c = folder / (WEIGHTS_NAME + ".tmp"), folder / (CONFIG_NAME + ".tmp")
    save_file(sd, str(tmp_w))
    tmp_c.write_text(json.dumps(config, indent=2, default=str))
    tmp_w.replace(folder / WEIGHTS_NAME)
    tmp_c.replace(folder / CONFIG_NAME)
    return folder


#: What to do about a damaged file of a component folder (said in every such error).
DAMAGED_FIX = "retrain this component (cxraug train) or copy the file again from the original run"


def check_weights(path: str | Path) -> Path:
    """Raise a one-line :class:`WeightsError` naming ``path`` unless it is a complete safetensors
    file. Reads the header only: a truncated, empty or overwritten file fails here (the header
    must cover the file exactly) instead of as a SafetensorError deep inside a loader."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file is missing; {DAMAGED_FIX}")
    try:
        with safe_open(str(path), "pt") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        why = (str(e).splitlines() or [type(e).__name__])[0].replace("Error while deserializing header: ", "")
        raise WeightsError(f"{path}: truncated or corrupt weights file ({why}, "
                           f"{path.stat().st_size} bytes); {DAMAGED_FIX}") from None
    return path


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors state dict, or a one-line :class:`WeightsError` naming the damaged file."""
    path = check_weights(path)
    try:
        return load_file(str(path), device=str(device))
    except SafetensorError as e:
        why = (str(e).splitlines() or [type(e).__name__])[0]
        raise WeightsError(f"{path}: corrupt weights file ({why}); {DAMAGED_FIX}") from None


def read_json(path: str | Path) -> Any:
    """A JSON file of a component or run, or a one-line :class:`WeightsError` when it is damaged."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path}: damaged, not valid JSON ({str(e).splitlines()[0][:80]}); "
                           f"{DAMAGED_FIX}") from None


def check_component(folder: str | Path, weights: str = WEIGHTS_NAME,
                    json_files: tuple[str, ...] = (CONFIG_NAME,)) -> None:
    """Check the files a loader will read from ``folder`` (present ones; loaders report missing
    ones), so a damaged copy is named before any of it is loaded. ``weights`` is a glob."""
    folder = Path(folder)
    for name in json_files:
        if (folder / name).is_file():
            read_json(folder / name)
    for path in sorted(folder.glob(weights)):
        check_weights(path)


def read_config(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise WeightsError(f"{folder}: no {CONFIG_NAME} here; expected a component folder saved by cxraug")
    return read_json(path)


def load_component(folder: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a component from its folder (class by name, args from config, safetensors weights)."""
    folder = Path(folder)
    config = read_config(folder)
    cls = _REGISTRY.get(config.get("class", ""))
    if cls is None:
        raise WeightsError(f"{folder}: unknown component class {config.get('class')!r}; "
                           f"known: {', '.join(sorted(_REGISTRY)) or 'none imported'}")
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise WeightsError(f"{folder}: {WEIGHTS_NAME} is missing")
    sd = load_weights(weights, map_location)
    model = cls(**config["args"])
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{weights}: weights do not fit {cls.__name__}{config['args']} "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.meta = config.get("meta", {})
    return model
