"""The generators behind the synthetic arms: the cohort synthesised for the bench, the strict
protocol's generator per real fraction, and which real images a generator was trained on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from cxraug.classify.real import RealData
from cxraug.cohorts.config import SynthConfig
from cxraug.cohorts.generate import synthesize
from cxraug.core import config as C
from cxraug.core.errors import CxraugError, DataError
from cxraug.data.reference import REFERENCE_NAME
from cxraug.data.splits import real_subset
from cxraug.diffusion.config import DiffCXRConfig
from cxraug.diffusion.prepare import apply_filter
from cxraug.diffusion.stages import train_run
from cxraug.experiments.bench.config import BenchConfig


def cohort_for_bench(model: Path, labels: list[str], n: int, out: Path, seed: int = 0,
                     progress: bool = True) -> Path:
    """Synthesise a cohort for the benchmark's labels from a generator run (resumable)."""
    cfg = SynthConfig(labels=list(labels), n=n, seed=seed, gates=["memorisation"])
    synthesize(cfg, model, out, progress=progress)
    return out


def generator_config(model: Path, frac: float, cfg: BenchConfig, overrides: list[str] | None = None):
    """The config of ``model`` retargeted to the real subset ``frac`` of the same splits."""
    if not (model / "config.yaml").is_file():
        raise CxraugError(f"{model}: no config.yaml; --strict needs a run folder written by cxraug train")
    sets = [f"data.real_frac={frac}", f"data.split_seed={cfg.split_seed}",
            f"data.subset_seed={cfg.subset_seed}", *(overrides or [])]
    return C.load(DiffCXRConfig, model / "config.yaml", sets)


def _strict_is_model(model: Path, frac: float, cfg: BenchConfig,
                     overrides: list[str] | None = None) -> bool:
    """Whether ``model`` already is the strict generator of fraction ``frac``."""
    own = C.load(DiffCXRConfig, model / "config.yaml")
    return not overrides and own.data.real_frac == frac and own.data.subset_seed == cfg.subset_seed


def generator_source(model: Path, frac: float | None, cfg: BenchConfig, out: Path,
                     overrides: list[str] | None = None) -> tuple[Path, Any]:
    """``(folder, recipe)`` of the generator whose training images ``gen-data->real`` uses: the
    given run under the paper's protocol (``frac`` None), else the strict generator of ``frac``
    (its recipe is known before it is trained)."""
    if not (model / "config.yaml").is_file():
        raise CxraugError(f"{model}: no config.yaml; arm gen-data->real needs a generator run "
                          "folder written by cxraug train, or an exported model")
    if frac is None or _strict_is_model(model, frac, cfg, overrides):
        if not any((model / n).is_file() for n in ("splits.csv", REFERENCE_NAME)):
            raise CxraugError(f"{model}: has neither splits.csv nor {REFERENCE_NAME}, so which "
                              "real images the generator saw is unknown; arm gen-data->real "
                              "needs a run folder from cxraug train or an exported model")
        return model, C.load(DiffCXRConfig, model / "config.yaml")
    return out / "generators" / f"frac{frac:g}", generator_config(model, frac, cfg, overrides)


def strict_generator(model: Path, frac: float, cfg: BenchConfig, out: Path,
                     overrides: list[str] | None = None, progress: bool = True) -> Path:
    """A generator trained like ``model`` (its recipe, same splits) on the real subset ``frac``
    only; ``model`` itself when it already is one. Trained once into ``out`` and resumable."""
    gen_cfg = generator_config(model, frac, cfg, overrides)
    if _strict_is_model(model, frac, cfg, overrides):
        return model
    out.mkdir(parents=True, exist_ok=True)
    if (model / "splits.csv").is_file() and not (out / "splits.csv").is_file():
        shutil.copyfile(model / "splits.csv", out / "splits.csv")
    stage = "2" if (model / "adapter" / "config.json").is_file() else "1"
    train_run(gen_cfg, out, [stage], progress=progress)
    return out


def check_unseen_test(real: RealData, folder: Path, name: str) -> None:
    """Refuse a generator that was trained on images of this bench's test split: its synthetic
    images could carry them into the classifiers that are scored on them. An exported model lists
    its training images (``reference.npz``); a run folder's splits are the bench's, so it cannot."""
    if not (folder / REFERENCE_NAME).is_file():
        return
    with np.load(folder / REFERENCE_NAME, allow_pickle=False) as z:
        seen = z["train_ids"].astype(str)
    leaked = np.isin(real.held_out_ids.get("test", np.array([], dtype=str)), seen)
    if leaked.any():
        first = real.held_out_ids["test"][leaked][0]
        raise DataError(f"{name}: the generator was trained on {int(leaked.sum())} images of this "
                        f"bench's test split (e.g. {first}), so the synthetic arms would be scored "
                        "on images it saw; use a generator trained without them, or --strict")


def _denoiser_meta(folder: Path) -> dict:
    p = folder / "denoiser" / "config.json"
    return json.loads(p.read_text()).get("meta", {}) if p.is_file() else {}


def generator_images(real: RealData, folder: Path, gen_cfg: Any) -> np.ndarray:
    """Rows of ``real.train`` the generator in ``folder`` (recipe ``gen_cfg``) is trained on.

    An exported model lists them (``reference.npz``); for a run folder they are the same
    function of the training split as in its training (real fraction and subset seed, then its
    LNFS filter), which holds because the bench reuses the run's ``splits.csv``. A trained
    generator's recorded image count must match, or the bench's data is not the generator's.
    """
    ids = np.asarray(real.train.ids, dtype=str)
    if (folder / REFERENCE_NAME).is_file():
        with np.load(folder / REFERENCE_NAME, allow_pickle=False) as z:
            seen = z["train_ids"].astype(str)
        expected: int | None = len(seen)
    else:
        train = real.train
        if gen_cfg.data.real_frac < 1:
            train = real_subset(train, gen_cfg.data.real_frac, seed=gen_cfg.data.subset_seed)
        if gen_cfg.data.filter:
            train = apply_filter(train, Path(gen_cfg.data.filter))
        seen, expected = np.asarray(train.ids, dtype=str), _denoiser_meta(folder).get("n_train_images")
    rows = np.flatnonzero(np.isin(ids, seen))
    if expected is not None and len(rows) != expected:
        raise DataError(f"{folder}: the generator was trained on {expected} real images but "
                        f"{len(rows)} of them are in this bench's training split; run the bench "
                        "on the generator's own data (--data) for arm gen-data->real")
    if len(rows) < 2:
        raise DataError(f"{folder}: {len(rows)} of the generator's training images found in this "
                        "bench's training split; need at least 2 for arm gen-data->real")
    return rows


def generator_trained_on(card: dict) -> dict:
    generator = card.get("generator", {}) if isinstance(card.get("generator"), dict) else {}
    return generator.get("trained_on") or {}
