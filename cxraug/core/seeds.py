"""Every derived seed in cxraug, in one place.

Each function is a pure function of its inputs (same inputs -> same seed in any process), and
each keeps the exact derivation it has always had, so splits, cohorts and runs made before the
functions moved here are reproduced bit for bit:

=====================  =================================================  =====================
``stable_seed(*parts)`` sha256 of ``"|".join(parts)``, 63 bits            runs, prompts, images
``named_rng(seed, n)``  numpy Generator from sha256 of ``"seed:n"``       patient splits, subsets
``subseed(seed, n)``    ``SeedSequence([seed, crc32(n)])``                classifier training
=====================  =================================================  =====================

A cohort image's seed is ``stable_seed(cohort_seed, "image", index)``.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np


def stable_seed(*parts: object) -> int:
    """A 63-bit seed derived from names and numbers (same inputs -> same seed, any process)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def image_seed(cohort_seed: int, index: int) -> int:
    """The seed of image ``index`` of a cohort with seed ``cohort_seed``."""
    return stable_seed(cohort_seed, "image", index)


def named_rng(seed: int, name: str) -> np.random.Generator:
    """A named sub-generator: the same (seed, name) always gives the same stream."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def subseed(seed: int, name: str) -> int:
    """A named, independent sub-seed of ``seed`` (data order, augmentation, init...)."""
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0])
