"""The generator a cohort is sampled from: a trained run folder or packaged model, loaded with
its config, its reference data (training and val images) and its identity (a hash of its weights).

    gen = LoadedGenerator.open("kermany-128")
    train = gen.training_set()
    pipe = gen.pipeline("cuda")
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxraug.core import config as C
from cxraug.core.errors import CxraugError
from cxraug.core.runs import RunDir
from cxraug.data.adapters import load_dataset, resolve_data
from cxraug.data.cache import cached_images
from cxraug.data.reference import REFERENCE_NAME, Reference, Rows, check_known
from cxraug.data.splits import splits_for
from cxraug.diffusion.config import DiffCXRConfig
from cxraug.diffusion.pipeline import DiffCXRPipeline
from cxraug.diffusion.prepare import training_dataset
from cxraug.models.zoo import SHIPPED, resolve_model


@dataclass
class LoadedGenerator:
    """A trained generator loaded as the cohort sees it: its run folder, config, training set
    (reference data) and identity (a hash of its weights).

    A run folder (``cxraug train``) reads its training and val images through its recipe's
    dataset; a packaged model (``cxraug export``, e.g. the shipped ``kermany-128``) carries them
    as a :class:`~cxraug.data.reference.Reference` instead.
    """

    run: object  # cxraug.core.runs.RunDir: the folder with vae/, text/, denoiser/, adapter/
    cfg: object  # DiffCXRConfig
    has_adapter: bool
    hash: str
    name: str = ""
    reference: object = None  # cxraug.data.reference.Reference of a packaged model

    @classmethod
    def open(cls, model: str | Path) -> LoadedGenerator:

        run = RunDir(resolve_model(model))
        if not (run.root / "config.yaml").is_file() or not (run.denoiser / "config.json").is_file():
            raise CxraugError(f"--model {model}: not a trained cxraug run (needs config.yaml and "
                              "denoiser/); train one with cxraug train --stage 1")
        cfg = C.load(DiffCXRConfig, run.root / "config.yaml")
        ref = run.root / REFERENCE_NAME
        usable = (run.adapter / "config.json").is_file() and run.stale_adapter() is None
        return cls(run, cfg, usable,
                   folder_hash(run.vae, run.text, run.denoiser, run.adapter), str(model),
                   Reference.load(ref) if ref.is_file() else None)

    def pipeline(self, device: str = "cpu"):
        """The generator's sampling pipeline, loaded from the folder and config opened here
        (:meth:`~cxraug.diffusion.pipeline.DiffCXRPipeline.from_run`): one loader per synth run."""
        return DiffCXRPipeline.from_run(self.run, self.cfg, device)

    def training_set(self):

        if self.reference is not None:
            return self.reference.train
        return training_dataset(self.cfg, self.run)

    def split(self, name: str):

        if self.reference is not None:
            if name not in ("train", "val"):
                raise CxraugError(f"{self.name}: a packaged model carries its train and val "
                                  f"references only, not {name!r}")
            return getattr(self.reference, name)
        ds = load_dataset(resolve_data(self.cfg.data.data), self.cfg.data.dataset,
                              missing="keep" if self.cfg.data.skip_bad else "error")
        return splits_for(ds, self.run.splits, seed=self.cfg.data.split_seed).where_split(name)

    def images(self, ds):
        """``(uint8 [N, S, S] memmap, dataset rows kept)`` at the generator's image size (a
        packaged model's training reference: at its reference size)."""

        if isinstance(ds, Rows):
            return ds.images, ds
        images, kept, _ = cached_images(ds, self.cfg.data.image_size, skip_bad=self.cfg.data.skip_bad,
                                        progress=False)
        return images, kept

    def check_labels(self, labels: list[str], train_labels: np.ndarray) -> None:

        check_known(labels, train_labels, self.name)

    def card(self) -> dict:
        """What the generator is and what it was trained on (for the dataset card)."""
        def meta(folder: Path) -> dict:
            p = folder / "config.json"
            return json.loads(p.read_text()).get("meta", {}) if p.is_file() else {}


        d, den, ada = self.cfg.data, meta(self.run.denoiser), meta(self.run.adapter)
        # a shipped model by its name: no path of this machine goes into the cohort card
        where = f"cxraug:{self.name}" if self.name in SHIPPED else str(self.run.root.resolve())
        return {"run": where, "hash": self.hash, "model_card": f"{where}/README.md",
                "trained_on": {"data": d.data, "dataset": den.get("trained_on", d.dataset),
                               "images": den.get("n_train_images"),
                               "split": "train (patient-level split of the official training images)"
                               if self.reference is not None else "train of splits.csv",
                               "real_frac": d.real_frac, "filter": d.filter, "image_size": d.image_size,
                               "prompts": d.prompts},
                "denoiser": {"preset": self.cfg.denoiser.preset, "steps": den.get("steps")},
                "adapter": {"steps": ada.get("steps")} if self.has_adapter else None}


def folder_hash(*folders: Path) -> str:
    """sha256 (16 hex) of every file's relative path and bytes under ``folders``."""
    h = hashlib.sha256()
    for folder in folders:
        if not Path(folder).is_dir():
            continue
        for p in sorted(q for q in Path(folder).rglob("*") if q.is_file()):
            h.update(f"{p.parent.name}/{p.name}\0".encode())
            with p.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


class Autocast:
    """A denoiser run under bf16 autocast that returns float32, so the solver's state and
    arithmetic stay in float32 (only the network's matrix products use bf16)."""

    def __init__(self, model, device: str = "cpu"):
        self.model, self.device = model, device

    def __call__(self, *args):
        import torch

        with torch.autocast(self.device, dtype=torch.bfloat16):
            return self.model(*args).float()
