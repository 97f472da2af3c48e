"""Typed, layered, strict configuration.

Precedence: dataclass defaults < YAML recipe < ``--set a.b=c`` overrides. Every config is a
(nested) dataclass; loading is strict, so an unknown key anywhere is an error naming its dotted
path and the keys that do exist. The resolved config is written into the run folder before work
starts (:func:`save`), and ``--dry-run`` prints it (:func:`dump`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cxraug.core.errors import CxraugError, writing

T = TypeVar("T")


class ConfigError(CxraugError, ValueError):
    """A recipe or override that does not fit the config schema."""


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise naming ``path``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{path}: cannot be null")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return from_dict(tp, value, path)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: must be one of {', '.join(map(str, allowed))}; got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: expected {tp.__name__}, got {value!r}") from None
        if tp is float and not math.isfinite(out):  # nan / inf pass float() but no check
            raise ConfigError(f"{path}: must be a finite number, got {value!r}")
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{path}: expected a whole number, got {value!r}")
        return out
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], path: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys raise :class:`ConfigError`."""
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown config key {where}{unknown[0]!r}; valid keys here: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{path}.{k}" if path else k) for k, v in data.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(obj: Any) -> Any:
    """A config dataclass as plain YAML/JSON-ready data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _parse_scalar(text: str) -> Any:
    """A ``--set`` value: parsed as YAML so numbers, booleans, lists and null work."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides to nested config data (in place and returned)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.steps=100")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {p!r} is not a section")
        node[parts[-1]] = _parse_scalar(raw)
    return data


def load(cls: type[T], recipe: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults < YAML recipe < overrides, validated into ``cls``."""
    data: dict[str, Any] = to_dict(cls())
    if recipe is not None:
        path = Path(recipe)
        if not path.is_file():
            raise ConfigError(f"{path}: recipe file not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of sections")
        _merge(data, loaded, str(path))
    if overrides:
        apply_overrides(data, list(overrides))
    return from_dict(cls, data)


def _merge(base: dict[str, Any], new: dict[str, Any], where: str, path: str = "") -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v, where, f"{path}{k}.")
        else:
            base[k] = v


def dump(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def save(obj: Any, folder: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config into ``folder`` (created) and return the file path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")  # readers never see a half-written file
    with writing(path):
        tmp.write_text(dump(obj))
    os.replace(tmp, path)
    return path


def parse_slice(text: str | None, option: str) -> tuple[int, int]:
    """``"i/N"`` (``--shard``, ``--job``: share i of N, counted from 0) -> ``(i, N)`` with
    ``0 <= i < N``; ``None`` -> ``(0, 1)``, the whole."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise CxraugError(f"{option} {text!r}: expected i/N with whole numbers, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise CxraugError(f"{option} {text}: need N >= 1 and 0 <= i < N (shares of 4 are 0/4 .. 3/4)")
    return i, n
