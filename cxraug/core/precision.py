"""One precision resolver for training and sampling.

``auto`` picks bf16 only where bf16 matrix products are fast: a CUDA GPU that supports it, or a
CPU with native bf16 matrix units (AMX-BF16 or AVX512-BF16). Elsewhere it picks fp32: on an
AVX2-only AMD EPYC one 2048x2048 bf16 matmul took 63 s against a fraction of a second in fp32
(``benchmarks/recipe_v2.py`` measures the ratio on the machine at hand). ``no`` is accepted as
accelerate's spelling of fp32.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from cxraug.core.config import ConfigError

PRECISIONS = ("auto", "fp32", "no", "bf16", "fp16")
FAST_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@lru_cache(maxsize=1)
def _cpuinfo_field(name: str) -> str | None:
    """The first ``name : value`` line of ``/proc/cpuinfo`` (None where it is not readable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == name:
                return value.strip()
    except OSError:
        pass
    return None


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine (``/proc/cpuinfo``; empty where it is not readable)."""
    return frozenset((_cpuinfo_field("flags") or "").split())


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` shows it (``/proc/cpuinfo``), else the platform's."""
    import platform

    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


# The flags that decide matmul speed here: what a measured ratio must be read beside.
SPEED_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def cpu_info() -> dict:
    """The CPU a number was measured on: model name, its speed-relevant flags, core count and
    whether ``auto`` precision picks bf16 on it."""
    import os

    flags = cpu_flags()
    return {"model": cpu_model(), "flags": [f for f in SPEED_FLAGS if f in flags],
            "cores": os.cpu_count(), "fast_bf16": cpu_has_fast_bf16(flags)}


def cpu_has_fast_bf16(flags: frozenset[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in FAST_BF16_FLAGS)


def resolve_precision(name: str, device: str | None = None, flags: frozenset[str] | None = None) -> str:
    """``auto``/``fp32``/``no``/``bf16``/``fp16`` -> ``fp32``, ``bf16`` or ``fp16``.

    ``device``: ``cuda``/``cpu``; default: CUDA when available.
    """
    import torch

    if name not in PRECISIONS:

        raise ConfigError(f"precision {name!r}: choose one of {', '.join(PRECISIONS)}")
    if name == "no":
        return "fp32"
    if name != "auto":
        return name
    cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if cuda:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16(flags) else "fp32"


def accelerate_precision(name: str, device: str | None = None) -> str:
    """The same choice in accelerate's vocabulary (``no`` for fp32)."""
    p = resolve_precision(name, device)
    return "no" if p == "fp32" else p


def default_device() -> str:
    """Where inference runs by default: the first CUDA GPU if there is one, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
