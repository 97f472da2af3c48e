"""What the limited-data bench compares: its arms, :class:`BenchConfig`, the list of jobs
(fraction, subset draw, arm, seed) and each job's folder.

The protocol in numbers (all recorded in ``config.yaml`` before any training):

* ``steps``: every arm of every fraction trains exactly this many optimiser steps of
  ``classifier.batch_size`` images (equal compute); the pre-training arms spend
  ``pretrain_share`` of them pre-training and the rest fine-tuning on the real subset.
* No validation data: each classifier is the final weights of that fixed schedule (warm-up, then
  cosine to 0), so no image outside the fraction selects a model.
* ``subsets``: independent patient-level draws of each fraction (subset seeds ``subset_seed``,
  ``subset_seed + 1``, ...), ``seeds`` trainings per draw.
* ``primary``: the comparison declared before the run (``FRAC:ARM``, always against
  ``real+dup``); every other comparison against ``real+dup`` is one Holm-adjusted family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from cxraug.classify.config import ClassifierConfig
from cxraug.classify.data import RealDataConfig
from cxraug.core.config import ConfigError

SHUFFLED = "shuffled-synth->real"  # the same cohort with permuted labels: "pre-training on anything"
ARMS = ("real", "real+dup", "real+synth", "synth->real", SHUFFLED, "gen-data->real", "synth")
SYNTH_ARMS = ("real+synth", "synth->real", SHUFFLED, "synth")
PRETRAIN_ARMS = ("synth->real", SHUFFLED, "gen-data->real")
GEN_DATA = "gen-data->real"
DUP = "real+dup"  # the control every synthetic arm must beat
GEN_ARMS = (*SYNTH_ARMS, GEN_DATA)  # arms whose result depends on a generator
SELECTION = "final"  # fixed schedule, final weights: nothing outside the fraction selects


@dataclass
class BenchConfig(RealDataConfig):
    """What to compare: the real data (:class:`RealDataConfig`), fractions, arms, draws, seeds
    and the compute budget."""

    image_size: int = 64
    real_fracs: list[float] = field(default_factory=lambda: [0.01, 1.0])
    arms: list[str] = field(default_factory=lambda: ["real", "real+dup", "real+synth"])
    synth_ratio: float = 1.0
    seeds: int = 1
    subsets: int = 1
    steps: int = 200
    pretrain_share: float = 0.5
    primary: str = ""  # "FRAC:ARM" vs real+dup; "" = the smallest fraction's first synthetic arm; "none"
    split_seed: int = 0
    subset_seed: int = 0
    n_boot: int = 1000
    classifier: ClassifierConfig = field(default_factory=lambda: ClassifierConfig(
        arch="resnet18", image_size=64, batch_size=64))

    def validate(self) -> None:
        if not self.real_fracs:
            raise ConfigError("real_fracs is empty: give one or more fractions in (0, 1], e.g. [0.01, 1.0]")
        if not self.arms:
            raise ConfigError(f"arms is empty: choose one or more of {', '.join(ARMS)}")
        for f in self.real_fracs:
            if not (isinstance(f, (int, float)) and 0 < f <= 1):  # nan fails here too
                raise ConfigError(f"real fraction {f}: must be in (0, 1], e.g. 0.01 for 1%")
        bad = [a for a in self.arms if a not in ARMS]
        if bad:
            raise ConfigError(f"unknown arm {bad[0]!r}; choose from {', '.join(ARMS)}")
        for name in ("seeds", "subsets"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} {getattr(self, name)}: must be >= 1")
        if self.steps < 2:
            raise ConfigError(f"steps {self.steps}: must be >= 2 (optimiser steps per arm)")
        if not (isinstance(self.synth_ratio, (int, float)) and math.isfinite(self.synth_ratio)
                and self.synth_ratio > 0):
            raise ConfigError(f"synth_ratio {self.synth_ratio}: must be a finite number > 0")
        if not 0 < self.pretrain_share < 1:
            raise ConfigError(f"pretrain_share {self.pretrain_share}: must be in (0, 1)")
        if self.n_boot < 20:
            raise ConfigError(f"n_boot {self.n_boot}: must be >= 20")
        self.primary_comparison()
        if self.classifier.image_size != self.image_size:
            self.classifier.image_size = self.image_size

    def split_steps(self) -> tuple[int, int]:
        """(pre-training, fine-tuning) steps of a pre-training arm; they add up to ``steps``."""
        pre = min(self.steps - 1, max(1, round(self.steps * self.pretrain_share)))
        return pre, self.steps - pre

    def primary_comparison(self) -> tuple[float, str] | None:
        """(fraction, arm) of the declared primary comparison against ``real+dup``, or None when
        the arms have no synthetic one or no ``real+dup``."""
        if self.primary == "none":  # declared elsewhere (a sweep of several benches)
            return None
        if self.primary:
            frac, _, arm = self.primary.partition(":")
            try:
                f = float(frac)
            except ValueError:
                raise ConfigError(f"primary {self.primary!r}: expected FRAC:ARM, e.g. 0.05:synth->real") from None
            if f not in self.real_fracs or arm not in self.arms or arm == DUP or DUP not in self.arms:
                raise ConfigError(f"primary {self.primary!r}: the fraction and arm must be run, "
                                  f"with real+dup (fractions {self.real_fracs}, arms {self.arms})")
            return f, arm
        synth = [a for a in ARMS if a in self.arms and a in GEN_ARMS]
        if not synth or DUP not in self.arms:
            return None
        return min(self.real_fracs), synth[0]


Job = tuple[float, int, str, int]  # (fraction, subset draw, arm, seed)


def jobs(cfg: BenchConfig) -> list[Job]:
    """Every (fraction, draw, arm, seed); ``real`` first within a (fraction, draw, seed)."""
    arms = sorted(set(cfg.arms) | {"real"}, key=ARMS.index)
    return [(f, d, a, s) for f in cfg.real_fracs for d in range(cfg.subsets)
            for s in range(cfg.seeds) for a in arms]


def job_dir(out: Path, frac: float, draw: int, arm: str, seed: int) -> Path:
    name = arm.replace('->', '-to-').replace('+', '-plus-')
    return out / "jobs" / f"frac{frac:g}_draw{draw}_{name}_seed{seed}"
