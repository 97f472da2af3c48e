"""Model artifacts: a component is its constructor arguments saved beside its weights.

Every trainable component (VAE wrapper, report encoder + squeeze, denoiser, disease adapter,
classifier) is saved as one folder::

    folder/config.json        {"class": "UViT", "args": {...constructor...}, "meta": {...}}
    folder/model.safetensors  the state dict of the unwrapped, uncompiled module

``meta`` carries what a user needs to feed the component: label order, image size, pixel range,
latent scale. Loading needs that folder alone, and never unpickles anything.
"""

from __future__ import annotations

import collections.abc
import inspect
import json
import types
import typing
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from cxraug.core.errors import WeightsError, writing

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
    with writing(folder / WEIGHTS_NAME):
        save_file(sd, str(tmp_w))
    with writing(folder / CONFIG_NAME):
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


def load_tables(path: str | Path, missing: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the metadata of a small safetensors file a sampler reads (the signal
    leak, the intensity map): ``missing`` (the way to make it) when absent, a damaged file as one
    line naming it."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: missing; {missing}")
    tensors = load_weights(path)
    with safe_open(str(path), framework="pt") as f:
        return tensors, f.metadata() or {}


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
    args = check_args(cls, config.get("args"), folder / CONFIG_NAME)
    sd = load_weights(weights, map_location)
    try:
        model = cls(**args)
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:
        raise WeightsError(f"{folder / CONFIG_NAME}: its args do not build a {cls.__name__} "
                           f"({_first_line(e)}); {DAMAGED_FIX}") from None
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{weights}: weights do not fit {cls.__name__}{config['args']} "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.meta = config.get("meta", {})
    return model


# ------------------------------------------------------------- config.json against the class

def check_args(cls: type, args: Any, path: Path) -> dict[str, Any]:
    """``config.json``'s ``args`` checked against ``cls.__init__``: every key a parameter, every
    required parameter given, every value of the annotated type (JSON lists stand for tuples).
    One line naming the file and the key, instead of a TypeError from deep in the constructor."""
    if not isinstance(args, dict):
        raise WeightsError(f"{path}: 'args' must be an object of {cls.__name__}'s constructor "
                           f"arguments, got {type(args).__name__}; {DAMAGED_FIX}")
    sig = inspect.signature(cls.__init__)
    params = {k: p for k, p in sig.parameters.items() if k != "self"
              and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    open_ended = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    for key in args:
        if key not in params and not open_ended:
            raise WeightsError(f"{path}: args.{key} is not an argument of {cls.__name__} (it takes "
                               f"{', '.join(params)}); {DAMAGED_FIX}")
    missing = [k for k, p in params.items() if p.default is p.empty and k not in args]
    if missing:
        raise WeightsError(f"{path}: args.{missing[0]} is missing ({cls.__name__} needs it); "
                           f"{DAMAGED_FIX}")
    try:
        hints = typing.get_type_hints(cls.__init__)
    except (NameError, TypeError, AttributeError):  # an annotation that does not resolve
        hints = {}
    for key, value in args.items():
        hint = hints.get(key)
        if hint is not None and not _fits(value, hint):
            raise WeightsError(f"{path}: args.{key} is {json.dumps(value)[:40]}, not "
                               f"{_type_name(hint)} ({cls.__name__}); {DAMAGED_FIX}")
    return args


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value can stand for an argument annotated ``hint``."""
    origin, inner = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in inner)
    if origin is typing.Literal:
        return value in inner
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple, collections.abc.Sequence) or hint in (list, tuple):
        if not isinstance(value, list):
            return False
        if origin is tuple and inner and inner[-1] is not Ellipsis:
            return len(value) == len(inner) and all(_fits(v, h) for v, h in zip(value, inner))
        return not inner or all(_fits(v, inner[0]) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if isinstance(hint, type) and hint is not object:
        return isinstance(value, hint)
    return True


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _first_line(e: BaseException) -> str:
    """The first line of an error, shortened at a word boundary."""
    import textwrap

    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return textwrap.shorten(line, 120, placeholder=" ...")


# ------------------------------------------------------------ plain tensor checkpoints (.pth)

def torch_load_plain(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` of a ``.pth`` / ``.bin`` file: tensors and plain
    containers only, never pickled code. A file that needs more (a pickled model, an arbitrary
    pickle) is a one-line :class:`WeightsError` saying what it holds; torch's warning about the
    pickle protocol of such a file is not shown beside it."""
    import pickle
    import re
    import struct
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        with open(path, "rb") as f:
            head = f.read(2)
        if not (head.startswith(b"\x80") or head == b"PK"):  # neither a pickle nor torch's zip
            raise WeightsError(f"{path}: not a readable torch checkpoint (not a pickle or zip file)") from None
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"pickled Python objects ({found.group(1)})" if found else "pickled Python objects"
        raise WeightsError(f"{path}: holds {what}, which cxraug never unpickles (unpickling can "
                           "run code)") from None
    except (RuntimeError, EOFError, OSError, ValueError, struct.error) as e:
        raise WeightsError(f"{path}: not a readable torch checkpoint ({_first_line(e)})") from None
