"""What the limited-data bench compares: its arms, :class:`BenchConfig`, the list of jobs
(fraction, arm, seed) and each job's folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cxraug.classify.data import RealDataConfig
from cxraug.classify.train import ClassifierConfig
from cxraug.core.config import ConfigError

ARMS = ("real", "real+dup", "real+synth", "synth->real", "gen-data->real", "synth")
SYNTH_ARMS = ("real+synth", "synth->real", "synth")
GEN_DATA = "gen-data->real"
DUP = "real+dup"  # the count-matched control every synthetic arm must beat
GEN_ARMS = (*SYNTH_ARMS, GEN_DATA)  # arms whose result depends on a generator


@dataclass
class BenchConfig(RealDataConfig):
    """What to compare: the real data (:class:`RealDataConfig`), fractions, arms and seeds."""

    image_size: int = 64
    real_fracs: list[float] = field(default_factory=lambda: [0.01, 1.0])
    arms: list[str] = field(default_factory=lambda: ["real", "real+dup", "real+synth"])
    synth_ratio: float = 1.0
    seeds: int = 1
    split_seed: int = 0
    subset_seed: int = 0
    n_boot: int = 1000
    classifier: ClassifierConfig = field(default_factory=lambda: ClassifierConfig(
        arch="resnet18", image_size=64, max_epochs=20, patience=4, batch_size=64))

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
        if self.seeds < 1:
            raise ConfigError(f"seeds {self.seeds}: must be >= 1")
        if self.synth_ratio <= 0:
            raise ConfigError(f"synth_ratio {self.synth_ratio}: must be > 0")
        if self.classifier.image_size != self.image_size:
            self.classifier.image_size = self.image_size


def jobs(cfg: BenchConfig) -> list[tuple[float, str, int]]:
    """Every (fraction, arm, seed); ``real`` first within a fraction."""
    arms = sorted(set(cfg.arms) | {"real"}, key=ARMS.index)
    return [(f, a, s) for f in cfg.real_fracs for s in range(cfg.seeds) for a in arms]


def job_dir(out: Path, frac: float, arm: str, seed: int) -> Path:
    return out / "jobs" / f"frac{frac:g}_{arm.replace('->', '-to-').replace('+', '-plus-')}_seed{seed}"
