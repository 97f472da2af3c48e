"""What defines a synthetic cohort: its arguments (:class:`SynthConfig`), the share of it one
process makes (``--shard i/N``) and the resolved settings a cohort folder records (``synth.json``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cxraug.cohorts.generator import LoadedGenerator, folder_hash
from cxraug.cohorts.plan import CohortSpec
from cxraug.core import config as C
from cxraug.core.config import ConfigError
from cxraug.core.errors import CxraugError
from cxraug.core.precision import default_device, resolve_precision
from cxraug.data import labels as L

#: The quality gates, in the order they run (:mod:`cxraug.cohorts.gates`).
GATES = ("fidelity", "memorisation")


@dataclass
class GateConfig:
    """Gate settings (``--set gate.recall=0.9`` on the command line)."""

    recall: float = 0.8  # share of real val positives a positive threshold keeps
    negative_keep: float = 0.95  # share of real val negatives below a negative threshold
    alpha: float = 0.01  # memorisation: reject above the (1 - alpha) quantile of real val SSIM
    top_k: int = 5  # nearest neighbours (by cosine) compared by SSIM
    pixel_embed: int = 16  # side of the pixel thumbnail used without a classifier
    batch_size: int = 256  # reference images embedded per batch
    #: fixed positive thresholds by label (e.g. {pneumonia: 0.6}), used instead of calibrated ones
    thresholds: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        for name in ("recall", "negative_keep"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"gate.{name} {getattr(self, name)}: must be in (0, 1]")
        if not 0 <= self.alpha < 1:
            raise ConfigError(f"gate.alpha {self.alpha}: must be in [0, 1)")
        if self.top_k < 1 or self.pixel_embed < 4 or self.batch_size < 1:
            raise ConfigError("gate.top_k >= 1, gate.pixel_embed >= 4 and gate.batch_size >= 1")
        self.thresholds = {L.canonical(k): float(v) for k, v in self.thresholds.items()}


@dataclass
class SynthConfig:
    """Everything that defines a cohort (``batch_size`` only changes speed, not the images)."""

    labels: list[str] = field(default_factory=list)
    n: int = 0
    negatives: float = 0.2
    cooccurrence: Literal["empirical", "none"] = "empirical"
    prompts: Literal["mined", "paper"] = "mined"
    seed: int = 0
    steps: int | None = None  # None: the run's sample.steps
    guidance: float | None = None  # None: the run's sample.guidance
    sampler: Literal["dpm++", "ddim"] = "dpm++"
    batch_size: int = 16
    classifier: str | None = None  # Classifier folder for the fidelity gate (and embeddings)
    gates: list[str] = field(default_factory=lambda: list(GATES))
    gate: GateConfig = field(default_factory=GateConfig)
    until_accepted: bool = False
    max_attempts: float = 3.0  # --until-accepted: at most max_attempts * n images in total
    format: Literal["png", "dicom"] = "png"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # denoiser arithmetic; auto: bf16 if fast

    def validate(self) -> None:
        self.labels = L.parse_label_list(self.labels)
        self.spec().validate()
        bad = [g for g in self.gates if g not in GATES]
        if bad:
            raise CxraugError(f"--gates {bad[0]!r}: choose from {', '.join(GATES)} or none")
        if self.batch_size < 1:
            raise CxraugError(f"--batch-size {self.batch_size}: must be >= 1")
        if self.steps is not None and not 1 <= self.steps <= 1000:
            raise CxraugError(f"--steps {self.steps}: must be between 1 and 1000")
        if self.guidance is not None and not (math.isfinite(self.guidance) and self.guidance >= 0):
            raise CxraugError(f"--guidance {self.guidance}: must be >= 0 (1 = no guidance)")
        if self.max_attempts < 1:
            raise CxraugError(f"max_attempts {self.max_attempts}: must be >= 1 (a multiple of --n)")

    def spec(self) -> CohortSpec:
        return CohortSpec(list(self.labels), self.n, self.negatives, self.cooccurrence, self.seed)


def parse_shard(text: str | None) -> tuple[int, int]:
    """``--shard i/N`` -> ``(i, N)`` (see :func:`cxraug.core.config.parse_slice`)."""
    return C.parse_slice(text, "--shard")


def cohort_settings(cfg: SynthConfig, gen: LoadedGenerator, steps: int, guidance: float) -> dict:
    """What ``synth.json`` holds: the arguments that define the cohort's images (compared when
    resuming), with the resolved sampling settings and the generator and classifier hashes."""
    s = C.to_dict(cfg)
    s.pop("batch_size")
    if not cfg.until_accepted:
        s.pop("max_attempts")
    if "fidelity" not in cfg.gates or not cfg.classifier:
        for k in ("recall", "negative_keep", "thresholds"):
            s["gate"].pop(k)
    if "memorisation" not in cfg.gates:
        for k in ("alpha", "top_k", "pixel_embed"):
            s["gate"].pop(k)
    s["gate"].pop("batch_size")
    s.pop("classifier")  # the weights identify the classifier, not the path it was given by
    s["classifier_hash"] = folder_hash(Path(cfg.classifier)) if cfg.classifier else None
    # the model config's sampling options that change the images (recorded when on, so cohorts
    # of a model that uses none of them read as before)
    sc = gen.cfg.sample
    sampling = {k: getattr(sc, k) for k in ("karras_sigmas", "signal_leak", "intensity_match") if getattr(sc, k)}
    if sc.intensity_match:
        sampling["intensity_sigma"] = sc.intensity_sigma
    return s | {"steps": steps, "guidance": guidance, "generator": gen.hash,
                "precision": resolve_precision(cfg.precision, default_device())} \
        | ({"sampling": sampling} if sampling else {})
