"""Package a trained run as a self-contained model folder: ``cxraug export RUN --out DIR``.

The folder is what ``--model`` accepts anywhere (and what the shipped ``kermany-128`` is)::

    DIR/config.yaml          the run's resolved recipe
    DIR/vae/ text/ denoiser/ adapter/
                             components (config.json + safetensors), float weights stored in
                             ``dtype`` (fp16 halves the size; they are loaded back as float32;
                             the intensity map's quantile tables are kept in float32)
    DIR/reference.npz        the generator's real-data reference for ``cxraug synth`` (training
                             labels, downsampled training images, val images; see
                             :mod:`cxraug.data.reference`), so no dataset is needed to use it
    DIR/README.md            model card (the run's, or the ``card`` file given)
    DIR/training_cost.json   the run's measured stage calls (wall seconds, machine), when it has one

Training-only files (checkpoints, caches, the contrastive image tower, splits) stay behind. The
folder is built under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cxraug.core import config as C
from cxraug.core.artifacts import load_weights
from cxraug.core.errors import CxraugError
from cxraug.core.runs import COST_NAME, RunDir
from cxraug.data.adapters import load_dataset, resolve_data
from cxraug.data.cache import cached_images
from cxraug.data.reference import REFERENCE_NAME, build_reference
from cxraug.data.splits import splits_for
from cxraug.diffusion.config import DiffCXRConfig
from cxraug.diffusion.intensity import INTENSITY_NAME
from cxraug.diffusion.prepare import training_dataset

COMPONENTS = ("vae", "text", "denoiser", "adapter")
#: Files a component folder needs for inference (anything else is training state).
KEEP_SUFFIXES = (".json", ".safetensors", ".txt")
SKIP_FILES = ("image_encoder.safetensors", "train_log.jsonl")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def convert_weights(src: Path, dst: Path, dtype: torch.dtype) -> None:
    """Copy a safetensors file (with its metadata), storing floating-point tensors in ``dtype``."""
    sd = load_weights(src)  # a damaged file is one line naming it
    with safe_open(str(src), framework="pt") as f:
        metadata = f.metadata()
    save_file({k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in sd.items()},
              str(dst), metadata=metadata)


def reference_for(cfg: DiffCXRConfig, run: RunDir, reference_size: int):
    """The run's training and val images (patient-level splits of ``splits.csv``) as a Reference."""

    size = cfg.data.image_size
    if size % reference_size:
        raise CxraugError(f"--reference-size {reference_size}: must divide the image size {size}")
    train = training_dataset(cfg, run)
    train_images, train, _ = cached_images(train, size, skip_bad=cfg.data.skip_bad, progress=False)
    ds = splits_for(load_dataset(resolve_data(cfg.data.data), cfg.data.dataset,
                                 missing="keep" if cfg.data.skip_bad else "error"), run.splits,
                    seed=cfg.data.split_seed)
    val_images, val, _ = cached_images(ds.where_split("val"), size, skip_bad=cfg.data.skip_bad,
                                       progress=False)
    return build_reference(train.ids, train.labels, train_images, val.ids, val.labels,
                           np.asarray(val_images), reference_size)


def export_model(run_dir: str | Path, out: str | Path, dtype: str = "float16",
                 reference_size: int = 64, card: str | Path | None = None,
                 overwrite: bool = False) -> Path:
    """Write the packaged model folder ``out`` from the trained run ``run_dir``."""
    run, out = RunDir(Path(run_dir)), Path(out)
    if dtype not in DTYPES:
        raise CxraugError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    if not (run.root / "config.yaml").is_file() or not (run.denoiser / "config.json").is_file():
        raise CxraugError(f"{run.root}: not a trained cxraug run (needs config.yaml and denoiser/)")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise CxraugError(f"{out}: exists and is not empty; pass --overwrite or another --out")
        if not (out / "config.yaml").is_file():
            raise CxraugError(f"{out}: not a cxraug model folder; refusing to replace it")
    cfg = C.load(DiffCXRConfig, run.root / "config.yaml")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(run.root / "config.yaml", tmp / "config.yaml")
    for name in COMPONENTS:
        src = run.root / name
        if not (src / "config.json").is_file():
            continue
        (tmp / name).mkdir()
        for f in sorted(src.iterdir()):
            if not f.is_file() or f.name in SKIP_FILES or f.suffix not in KEEP_SUFFIXES:
                continue
            if f.suffix == ".safetensors" and f.name != INTENSITY_NAME:  # quantile tables stay fp32
                convert_weights(f, tmp / name / f.name, DTYPES[dtype])
            else:
                shutil.copyfile(f, tmp / name / f.name)
    reference_for(cfg, run, reference_size).save(tmp / REFERENCE_NAME)
    card_text = Path(card).read_text() if card else (run.root / "README.md").read_text() \
        if (run.root / "README.md").is_file() else f"# {out.name}\n"
    (tmp / "README.md").write_text(card_text)
    if (run.root / COST_NAME).is_file():
        shutil.copyfile(run.root / COST_NAME, tmp / COST_NAME)
    (tmp / "export.json").write_text(json.dumps({"dtype": dtype, "reference_size": reference_size,
                                                 "components": [c for c in COMPONENTS
                                                                if (tmp / c).is_dir()]}, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
