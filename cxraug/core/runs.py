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
from pathlib import Path


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

    def checkpoints(self, stage: int) -> Path:
        return self.root / "checkpoints" / f"stage{stage}"

    def metrics(self, stage: int) -> Path:
        return self.root / ("metrics.jsonl" if stage == 1 else f"metrics_stage{stage}.jsonl")
