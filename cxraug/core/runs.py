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
    run/training_cost.json wall seconds of every stage call, with the machine it ran on
    run/README.md          model card
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from cxraug.core.precision import cpu_info

#: The folder of a run's resumable training state (a generator run's or a classifier run's).
CHECKPOINTS = "checkpoints"
#: Wall seconds of every stage call of a run (:func:`timed_stage`), the model card's cost table.
COST_NAME = "training_cost.json"


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


def machine() -> dict:
    """Where a stage ran: the CPU (model, speed flags, cores) and the GPU, if one was used."""
    import torch

    info = cpu_info()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": info["model"], "flags": info["flags"], "cores": info["cores"], "gpu": gpu,
            "gpus": torch.cuda.device_count() if gpu else 0}


@contextlib.contextmanager
def timed_stage(root: Path, stage: str, record: bool = True) -> Iterator[None]:
    """Append the wall seconds of one stage call to ``root/training_cost.json`` when it ends or
    is interrupted (a resumed stage adds a call); a call refused with an error adds nothing, and
    a killed one (SIGKILL) is lost."""
    t0 = time.perf_counter()
    try:
        yield
    except KeyboardInterrupt:
        if record:
            _append_cost(Path(root), stage, time.perf_counter() - t0, interrupted=True)
        raise
    if record:
        _append_cost(Path(root), stage, time.perf_counter() - t0, interrupted=False)


def _append_cost(root: Path, stage: str, seconds: float, interrupted: bool) -> None:
    calls = training_cost(root)
    calls.append({"stage": stage, "seconds": round(seconds, 1), "interrupted": interrupted,
                  "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine()})
    tmp = root / f".{COST_NAME}.tmp"
    tmp.write_text(json.dumps({"calls": calls}, indent=2) + "\n")
    os.replace(tmp, root / COST_NAME)


def training_cost(root: Path) -> list[dict]:
    """The recorded stage calls of a run ([] when none, or the record is unreadable)."""
    try:
        return list(json.loads((Path(root) / COST_NAME).read_text())["calls"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def cost_by_stage(calls: list[dict]) -> dict[str, dict]:
    """Per stage: hours in all, calls, and the distinct machines (CPU, or GPU where used)."""
    out: dict[str, dict] = {}
    for c in calls:
        m = c.get("machine") or {}
        where = f"{m.get('gpus')}x {m['gpu']}" if m.get("gpu") else \
            f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores ({', '.join(m.get('flags') or []) or 'no listed flags'})"
        row = out.setdefault(c["stage"], {"hours": 0.0, "calls": 0, "machines": []})
        row["hours"] += c["seconds"] / 3600
        row["calls"] += 1
        if where not in row["machines"]:
            row["machines"].append(where)
    return out
