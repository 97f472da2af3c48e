"""The run-folder layout: what ``cxraug train`` writes where.

A run folder (``RunDir``) holds the components and the training state::

    run/config.yaml        resolved recipe (written before work starts)
    run/splits.csv         patient-level splits of the training data
    run/vae/               latent space (diffusers AutoencoderKL + cxraug_latent.json)
    run/text/              report encoder + information squeeze (AVA-TLS)
    run/denoiser/          stage-1 U-ViT (EMA weights), config.json + model.safetensors
    run/adapter/           stage-2 DKIM adapter (EMA weights)
    run/cache/             latent moments and condition embeddings of the training images
    run/checkpoints/       resumable training state per stage
    run/samples/           sample grids of fixed validation prompts
    run/metrics*.jsonl     training curves
    run/README.md          model card
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

#: The folder of a run's resumable training state (a generator run's or a classifier run's).
CHECKPOINTS = "checkpoints"


@dataclasses.dataclass
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    vae = property(lambda self: self.root / "vae")
    text = property(lambda self: self.root / "text")
    denoiser = property(lambda self: self.root / "denoiser")
    adapter = property(lambda self: self.root / "adapter")
    cache = property(lambda self: self.root / "cache")
    samples = property(lambda self: self.root / "samples")
    splits = property(lambda self: self.root / "splits.csv")

    def checkpoints(self, stage: int | str) -> Path:
        """Training state of stage 1 or 2 (``checkpoints/stage1``) or ``"decoder"`` tuning."""
        return self.root / CHECKPOINTS / (f"stage{stage}" if isinstance(stage, int) else stage)

    def metrics(self, stage: int) -> Path:
        return self.root / ("metrics.jsonl" if stage == 1 else f"metrics_stage{stage}.jsonl")

    def meta(self, component: str) -> dict:
        """A component's ``meta`` (``vae``/``text``/``denoiser``/``adapter``); {} when absent or
        damaged."""
        p = self.root / component / "config.json"
        try:
            return json.loads(p.read_text()).get("meta", {}) if p.is_file() else {}
        except (ValueError, AttributeError):
            return {}

    def stale_adapter(self) -> str | None:
        """Why the DKIM adapter does not fit this run's stage-1 denoiser (it was fitted to an
        export with another number of steps, e.g. before ``--stage 1`` trained on), else None."""
        ada, den = self.meta("adapter"), self.meta("denoiser")
        if not ada or not den or "base_steps" not in ada or ada["base_steps"] == den.get("steps"):
            return None  # an unreadable denoiser config is reported where it is loaded
        return (f"{self.adapter}: fitted to the {ada['base_steps']}-step denoiser, but the denoiser "
                f"now has {den.get('steps')} steps; sampling without it (refit it with cxraug "
                f"train --stage 2 --out {self.root})")
