"""Everything the denoiser trains on, computed once per run and cached in the run folder: the
training set (splits, real subset, LNFS filter), its latent moments and condition embeddings (the
texts come from :mod:`cxraug.diffusion.prompts`); the folder layout is ``cxraug.core.runs.RunDir``.
Also what the sampler fits to the training split: the signal leak and the intensity map."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxraug.core.artifacts import WEIGHTS_NAME
from cxraug.core.errors import DataError, WeightsError
from cxraug.core.precision import default_device
from cxraug.core.progress import job_progress
from cxraug.core.runs import RunDir, timed_stage
from cxraug.core.seeds import stable_seed
from cxraug.data.adapters import load_dataset, resolve_data
from cxraug.data.cache import cached_images
from cxraug.data.datasets import CXRDataset
from cxraug.data.splits import real_subset, splits_for
from cxraug.data.tables import read_csv
from cxraug.diffusion.config import DataConfig, DiffCXRConfig
from cxraug.diffusion.intensity import INTENSITY_NAME, IntensityMap
from cxraug.diffusion.pipeline import DiffCXRPipeline
from cxraug.diffusion.prompts import embed_texts, hints_for, null_condition, prompts_for
from cxraug.diffusion.signal_leak import LEAK_NAME, SignalLeak
from cxraug.models.autoencoder import LatentSpace, cache_moments


def _ids_hash(ids) -> str:
    """A short fingerprint of a list of image ids (which images a fitted table saw)."""
    return hashlib.sha256("|".join(ids).encode()).hexdigest()[:16]


def training_dataset(cfg: DiffCXRConfig, run: RunDir) -> CXRDataset:
    """The generator's training images: the train split (or its real subset), LNFS-filtered."""
    ds = load_dataset(resolve_data(cfg.data.data), cfg.data.dataset,
                      missing="keep" if cfg.data.skip_bad else "error")
    ds = splits_for(ds, run.splits, seed=cfg.data.split_seed)
    train = training_subset(ds.where_split("train"), cfg.data)
    if len(train) < 2:
        raise DataError(f"{cfg.data.data}: only {len(train)} training image(s) after splits/filters")
    return train


def training_subset(train: CXRDataset, data: DataConfig) -> CXRDataset:
    """The one rule for which rows of a training split a generator trains on: its real subset
    (``data.real_frac``, ``data.subset_seed``), then its LNFS filter (``data.filter``)."""
    if data.real_frac < 1:
        train = real_subset(train, data.real_frac, seed=data.subset_seed)
    if data.filter:
        train = apply_filter(train, Path(data.filter))
    return train


def apply_filter(ds: CXRDataset, path: Path) -> CXRDataset:
    """Keep the rows an LNFS keep/drop CSV (``id, keep``) marks as kept."""

    df = read_csv(path, ("id", "keep"), "LNFS filter list (from cxraug filter)")
    keep = dict(zip(df["id"], df["keep"].str.lower().isin(["1", "true", "yes"])))
    unknown = [i for i in ds.ids if i not in keep]
    if len(unknown) == len(ds):
        raise DataError(f"{path}: lists none of this dataset's images; was it made for other data?")
    mask = np.array([keep.get(i, True) for i in ds.ids])
    out = ds.select(mask)
    out.filters.append(f"LNFS filter {path.name}: {int((~mask).sum())} images dropped")
    return out


@dataclasses.dataclass
class TrainingSet:
    """Cached inputs of denoiser training, aligned by row.

    ``moments``: latent posterior moments ``float32 [N, 2C, h, w]``; ``cond_bank`` ``[U, K, D]``
    with ``cond_index [N]``; ``hint_bank``/``hint_index`` likewise for DKIM hints; ``null`` the
    empty-text context ``[K, D]``; ``prompts``/``hints`` the texts; ``dataset`` the rows.
    """

    dataset: CXRDataset
    moments: torch.Tensor
    prompts: list[str]
    cond_bank: torch.Tensor
    cond_index: np.ndarray
    hints: list[str]
    hint_bank: torch.Tensor
    hint_index: np.ndarray
    null: torch.Tensor

    def __len__(self) -> int:
        return len(self.cond_index)


def training_moments(cfg: DiffCXRConfig, run: RunDir, latent_space, progress: bool = True):
    """The training images and their latent posterior moments ``[N, 2C, h, w]`` (cached in the
    run folder, keyed by the image ids and the latent space)."""
    train = training_dataset(cfg, run)
    images, train, _ = cached_images(train, cfg.data.image_size, skip_bad=cfg.data.skip_bad,
                                     progress=progress)
    key = hashlib.sha256(("|".join(train.ids) + latent_space.fingerprint()).encode()).hexdigest()[:16]
    return train, cache_moments(latent_space, images, run.cache / f"moments-{key}.npy", key=key,
                                progress=progress)


def write_signal_leak(cfg: DiffCXRConfig, run: RunDir, progress: bool = True) -> Path:
    """Fit the sampler's signal leak (:mod:`cxraug.diffusion.signal_leak`) to the latents of the
    run's training images and save it beside the stage-1 denoiser; kept while it was fitted to
    this latent space and these images."""
    space = LatentSpace.load(run.vae)
    train = training_dataset(cfg, run)
    info = {"latent_space": space.fingerprint()[:16], "trained_on": train.name,
            "images": _ids_hash(train.ids)}
    path = run.denoiser / LEAK_NAME
    if path.is_file():
        try:
            if all(SignalLeak.load(path).info.get(k) == v for k, v in info.items()):
                return path
        except WeightsError:
            pass  # damaged: fitted again below
    _, moments = training_moments(cfg, run, space, progress)
    g = torch.Generator().manual_seed(stable_seed(cfg.train.seed, "signal_leak"))
    z = torch.cat([space.sample(torch.from_numpy(np.array(moments[i:i + 256])), g)
                   for i in range(0, len(moments), 256)])
    return SignalLeak.fit(z.cpu(), info=info).save(path)


def build_training_set(cfg: DiffCXRConfig, run: RunDir, latent_space, encoder,
                       progress: bool = True) -> TrainingSet:
    """Images -> cached latent moments; texts -> condition embeddings; labels -> DKIM hints."""

    train, moments = training_moments(cfg, run, latent_space, progress)
    prompts = prompts_for(train, cfg.data.prompts, cfg.train.seed)
    cond_bank, cond_index = embed_texts(encoder, prompts)
    hints = hints_for(train.labels)
    hint_bank, hint_index = embed_texts(encoder, hints)
    pd.DataFrame({"id": train.ids, "prompt": prompts, "hint": hints}).to_csv(
        run.cache / "prompts.csv", index=False)
    return TrainingSet(train, torch.as_tensor(np.array(moments), dtype=torch.float32), prompts,
                       cond_bank, cond_index, hints, hint_bank, hint_index, null_condition(encoder))


def _sha(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes() if p.is_file() else b"-")
    return h.hexdigest()[:16]


def write_intensity_map(cfg: DiffCXRConfig, run: RunDir, progress: bool = True) -> Path:
    """Fit ``sample.intensity_match``'s map (:mod:`cxraug.diffusion.intensity`) and save it beside
    the denoiser: images the finished generator draws for ``sample.intensity_fit_n`` training rows
    (their own prompts and labels, the config's sampling settings, seeds of their own) against
    every training image (a few hundred rows' own images are a noisy estimate of the real side,
    which costs no sampling). Kept while fitted to these weights, settings and images."""
    sc = cfg.sample
    train = training_dataset(cfg, run)
    rng = np.random.default_rng(stable_seed(cfg.train.seed, "intensity_map"))
    pick = np.sort(rng.choice(len(train), min(sc.intensity_fit_n, len(train)), replace=False))
    rows = train.select(np.isin(np.arange(len(train)), pick))
    weights = [*sorted(run.vae.glob("*.safetensors")), run.denoiser / WEIGHTS_NAME, run.adapter / WEIGHTS_NAME] \
        + ([run.denoiser / LEAK_NAME] if sc.signal_leak else [])
    info = {"weights": _sha(*weights), "images": _ids_hash(rows.ids), "real_images": _ids_hash(train.ids),
            "estimator": sc.intensity_estimator,
            "sampling": {"sampler": sc.sampler, "steps": sc.steps, "guidance": sc.guidance,
                         "karras_sigmas": sc.karras_sigmas, "signal_leak": sc.signal_leak}}
    path = run.denoiser / INTENSITY_NAME
    if path.is_file():
        try:
            old = IntensityMap.load(path)
            if old.sigma == sc.intensity_sigma and all(old.info.get(k) == v for k, v in info.items()):
                return path
        except WeightsError:
            pass  # damaged: fitted again below
    _, rows, _ = cached_images(rows, cfg.data.image_size, skip_bad=cfg.data.skip_bad, progress=False)
    real = cached_images(train, cfg.data.image_size, skip_bad=cfg.data.skip_bad, progress=False)[0]
    plain = dataclasses.replace(cfg, sample=dataclasses.replace(sc, intensity_match=False))
    prompts = prompts_for(rows, cfg.data.prompts, stable_seed(cfg.train.seed, "intensity_prompts"))
    seeds = [stable_seed(cfg.train.seed, "intensity_map", i) for i in range(len(prompts))]
    drawn = []
    with timed_stage(run.root, "intensity_map"), \
            job_progress("intensity map", enabled=progress) as bar:
        pipe = DiffCXRPipeline.from_run(run, plain, default_device())
        task = bar.add_task("sample", total=len(prompts))
        for i in range(0, len(prompts), sc.batch_size):
            j = slice(i, i + sc.batch_size)
            drawn.append(pipe(prompts[j], seeds=seeds[j], labels=rows.labels[j]))
            bar.advance(task, len(drawn[-1]))
        imap = IntensityMap.fit(np.concatenate(drawn), real, sc.intensity_sigma, info, sc.intensity_estimator)
        return imap.save(path)
