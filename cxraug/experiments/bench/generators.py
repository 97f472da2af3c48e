"""The generators behind the synthetic arms: the cohort synthesised for the bench, the strict
protocol's generator per real fraction, and which real images a generator was trained on."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from cxraug.classify.real import RealData
from cxraug.cohorts.config import SynthConfig
from cxraug.cohorts.generate import synthesize
from cxraug.core import config as C
from cxraug.core.errors import CxraugError, DataError
from cxraug.core.locks import folder_lock
from cxraug.data.reference import REFERENCE_NAME
from cxraug.diffusion.config import DiffCXRConfig
from cxraug.diffusion.prepare import training_subset
from cxraug.diffusion.stages import train_run
from cxraug.experiments.bench.config import BenchConfig


def cohort_for_bench(model: Path, labels: list[str], n: int, out: Path, seed: int = 0,
                     progress: bool = True) -> Path:
    """Synthesise a cohort for the benchmark's labels from a generator run (resumable). Job
    shares that need it at once wait for the first to finish it (a lock of their own: the
    cohort's writer lock refuses a second writer instead)."""
    cfg = SynthConfig(labels=list(labels), n=n, seed=seed, gates=["memorisation"])
    with folder_lock(out, "cohort", part="bench", wait=True):
        synthesize(cfg, model, out, progress=progress)
    return out


#: Written into a strict generator's folder when it is trained: the seconds it took.
COST_NAME = "bench_cost.json"
#: Stage step counts a strict generator's recipe scales with its subset's size.
SCALED_STEPS = ("vae.steps", "decoder.steps", "text.max_steps", "train.steps", "adapter.steps")
#: The smallest share of the given recipe's steps a strict generator trains (tiny subsets).
MIN_SHARE = 0.1


def _get(cfg: Any, key: str) -> Any:
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part, None)
    return obj


def scaled_steps(own: Any, n_images: int, n_model_images: int | None) -> list[str]:
    """Overrides giving each stage ``share = clip(n_images / n_model_images, MIN_SHARE, 1)`` of
    the recipe's steps: a strict generator's cost scales with its subset's size."""
    if not n_model_images:
        return []
    share = min(1.0, max(MIN_SHARE, n_images / n_model_images))
    out = []
    for key in SCALED_STEPS:
        v = _get(own, key)
        if isinstance(v, int) and v > 0:
            out.append(f"{key}={max(1, round(v * share))}")
    return out


def model_images(model: Path) -> int | None:
    """How many real images ``model`` was trained on (its reference list, else its denoiser's
    record), or None when unknown."""
    if (model / REFERENCE_NAME).is_file():
        with np.load(model / REFERENCE_NAME, allow_pickle=False) as z:
            return int(len(z["train_ids"]))
    return _denoiser_meta(model).get("n_train_images")


def generator_config(model: Path, frac: float, cfg: BenchConfig, overrides: list[str] | None = None,
                     draw: int = 0, n_images: int | None = None):
    """The recipe of ``model`` retargeted to draw ``draw`` of the real subset ``frac`` of the
    bench's own data (``cfg.data``, never the path the model recorded) and the bench's splits;
    with ``n_images`` (the subset's size) its stages' steps scale with it (:func:`scaled_steps`);
    ``overrides`` come last."""
    if not (model / "config.yaml").is_file():
        raise CxraugError(f"{model}: no config.yaml; --strict needs a run folder written by cxraug train")
    own = C.load(DiffCXRConfig, model / "config.yaml")
    scale = scaled_steps(own, n_images, model_images(model)) if n_images else []
    sets = [f"data.data={cfg.data}", f"data.dataset={cfg.dataset}", f"data.real_frac={frac}",
            f"data.split_seed={cfg.split_seed}", f"data.subset_seed={cfg.subset_seed + draw}",
            *scale, *(overrides or [])]
    return C.load(DiffCXRConfig, model / "config.yaml", sets)


def _strict_is_model(model: Path, frac: float, cfg: BenchConfig,
                     overrides: list[str] | None = None, draw: int = 0) -> bool:
    """Whether ``model`` already is the strict generator of draw ``draw`` of fraction ``frac``."""
    own = C.load(DiffCXRConfig, model / "config.yaml")
    return (not overrides and own.data.real_frac == frac
            and own.data.subset_seed == cfg.subset_seed + draw
            and Path(str(own.data.data)).resolve() == Path(str(cfg.data)).resolve())


def generator_source(model: Path, frac: float | None, cfg: BenchConfig, out: Path,
                     overrides: list[str] | None = None, draw: int = 0,
                     n_images: int | None = None) -> tuple[Path, Any]:
    """``(folder, recipe)`` of the generator whose training images ``gen-data->real`` uses: the
    given run under the paper's protocol (``frac`` None), else the strict generator of ``frac``
    (its recipe is known before it is trained)."""
    if not (model / "config.yaml").is_file():
        raise CxraugError(f"{model}: no config.yaml; arm gen-data->real needs a generator run "
                          "folder written by cxraug train, or an exported model")
    if frac is None or _strict_is_model(model, frac, cfg, overrides, draw):
        if not any((model / n).is_file() for n in ("splits.csv", REFERENCE_NAME)):
            raise CxraugError(f"{model}: has neither splits.csv nor {REFERENCE_NAME}, so which "
                              "real images the generator saw is unknown; arm gen-data->real "
                              "needs a run folder from cxraug train or an exported model")
        return model, C.load(DiffCXRConfig, model / "config.yaml")
    return (out / "generators" / f"frac{frac:g}_draw{draw}",
            generator_config(model, frac, cfg, overrides, draw, n_images))


def strict_generator(model: Path, frac: float, cfg: BenchConfig, out: Path,
                     overrides: list[str] | None = None, progress: bool = True, draw: int = 0,
                     n_images: int | None = None, splits: Path | None = None) -> Path:
    """A generator trained like ``model`` (its recipe scaled to the subset, the bench's data and
    splits) on draw ``draw`` of the real subset ``frac`` only; ``model`` itself when it already
    is one. Trained once into ``out`` and resumable."""
    gen_cfg = generator_config(model, frac, cfg, overrides, draw, n_images)
    if _strict_is_model(model, frac, cfg, overrides, draw):
        return model
    # Job shares (--job i/N) may need the same generator at once: the first trains it, the
    # others wait and then find it trained.
    with folder_lock(out, "generator", wait=True):
        out.mkdir(parents=True, exist_ok=True)
        splits = splits if splits is not None else model / "splits.csv"  # the bench's splits
        if splits.is_file() and not (out / "splits.csv").is_file():
            shutil.copyfile(splits, out / "splits.csv")
        stage = "2" if (model / "adapter" / "config.json").is_file() else "1"
        cost = out / COST_NAME
        resumed = (out / "config.yaml").is_file()
        t0 = time.perf_counter()
        train_run(gen_cfg, out, [stage], progress=progress)
        if not cost.is_file():  # the call that finished it; a resumed call's earlier time is not in it
            cost.write_text(json.dumps({"seconds": round(time.perf_counter() - t0, 1),
                                        "resumed": resumed, "n_images": n_images}, indent=2) + "\n")
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
        train = training_subset(real.train, gen_cfg.data)
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
