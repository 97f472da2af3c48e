"""Everything the denoiser trains on, computed once per run and cached in the run folder
(training set, prompts, condition embeddings); the folder layout is ``cxraug.core.runs.RunDir``."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxraug.core.errors import DataError
from cxraug.core.runs import RunDir
from cxraug.core.seeds import stable_seed
from cxraug.data import labels as L
from cxraug.data.adapters import load_dataset, resolve_data
from cxraug.data.cache import cached_images
from cxraug.data.datasets import CXRDataset
from cxraug.data.splits import real_subset, splits_for
from cxraug.diffusion.config import DiffCXRConfig


def training_dataset(cfg: DiffCXRConfig, run: RunDir) -> CXRDataset:
    """The generator's training images: the train split (or its real subset), LNFS-filtered."""
    ds = load_dataset(resolve_data(cfg.data.data), cfg.data.dataset,
                      missing="keep" if cfg.data.skip_bad else "error")
    ds = splits_for(ds, run.splits, seed=cfg.data.split_seed)
    train = ds.where_split("train")
    if cfg.data.real_frac < 1:
        train = real_subset(train, cfg.data.real_frac, seed=cfg.data.subset_seed)
    if cfg.data.filter:
        train = apply_filter(train, Path(cfg.data.filter))
    if len(train) < 2:
        raise DataError(f"{cfg.data.data}: only {len(train)} training image(s) after splits/filters")
    return train


def apply_filter(ds: CXRDataset, path: Path) -> CXRDataset:
    """Keep the rows an LNFS keep/drop CSV (``id, keep``) marks as kept."""
    from cxraug.data.adapters import read_csv

    df = read_csv(path, ("id", "keep"), "LNFS filter list (from cxraug filter)")
    keep = dict(zip(df["id"], df["keep"].str.lower().isin(["1", "true", "yes"])))
    unknown = [i for i in ds.ids if i not in keep]
    if len(unknown) == len(ds):
        raise DataError(f"{path}: lists none of this dataset's images; was it made for other data?")
    mask = np.array([keep.get(i, True) for i in ds.ids])
    out = ds.select(mask)
    out.filters.append(f"LNFS filter {path.name}: {int((~mask).sum())} images dropped")
    return out


def prompts_for(ds: CXRDataset, source: str, seed: int) -> list[str]:
    """One text per image: its report when it has one, else report-like text built from its
    labels by the prompt builder, seeded per image so it is the same in every run."""
    from cxraug.data.templates import PromptBuilder

    builder = PromptBuilder(source=source)
    reports, labels = ds.reports, ds.labels
    return [r if r else builder.build(labels[i], seed=stable_seed(seed, "prompt", ident))
            for i, (ident, r) in enumerate(zip(ds.ids, reports))]


def hints_for(labels: np.ndarray) -> list[str]:
    """DKIM hint sentences (the paper's templates) for raw label vectors ``[N, 14]``."""
    from cxraug.data.templates import paper_hint

    return [paper_hint(v) for v in np.atleast_2d(labels)]


@torch.no_grad()
def embed_texts(encoder, texts: list[str], batch_size: int = 64) -> tuple[torch.Tensor, np.ndarray]:
    """Encode each distinct text once: returns ``(bank [U, K, D] float32, index [N])``."""
    unique = list(dict.fromkeys(texts))
    pos = {t: i for i, t in enumerate(unique)}
    chunks = [encoder.encode(unique[i:i + batch_size])[1].float().cpu()
              for i in range(0, len(unique), batch_size)]
    return torch.cat(chunks), np.array([pos[t] for t in texts], dtype=np.int64)


def null_condition(encoder) -> torch.Tensor:
    """The unconditional context for classifier-free guidance: the encoding of empty text."""
    with torch.no_grad():
        return encoder.encode([""])[1][0].float().cpu()


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


def build_training_set(cfg: DiffCXRConfig, run: RunDir, latent_space, encoder,
                       progress: bool = True) -> TrainingSet:
    """Images -> cached latent moments; texts -> condition embeddings; labels -> DKIM hints."""
    from cxraug.models.autoencoder import cache_moments

    train = training_dataset(cfg, run)
    images, train, _ = cached_images(train, cfg.data.image_size, skip_bad=cfg.data.skip_bad,
                                     progress=progress)
    key = hashlib.sha256(("|".join(train.ids) + latent_space.fingerprint()).encode()).hexdigest()[:16]
    moments = cache_moments(latent_space, images, run.cache / f"moments-{key}.npy", key=key)
    prompts = prompts_for(train, cfg.data.prompts, cfg.train.seed)
    cond_bank, cond_index = embed_texts(encoder, prompts)
    hints = hints_for(train.labels)
    hint_bank, hint_index = embed_texts(encoder, hints)
    pd.DataFrame({"id": train.ids, "prompt": prompts, "hint": hints}).to_csv(
        run.cache / "prompts.csv", index=False)
    return TrainingSet(train, torch.as_tensor(np.array(moments), dtype=torch.float32), prompts,
                       cond_bank, cond_index, hints, hint_bank, hint_index, null_condition(encoder))


def validation_prompts(train: CXRDataset, source: str, per_label: int = 1) -> list[tuple[str, np.ndarray]]:
    """Fixed prompts for sample grids: one label vector per positive observation seen in
    training (single-disease) plus No Finding, each turned into text deterministically."""
    from cxraug.data.templates import PromptBuilder

    builder = PromptBuilder(source=source)
    vectors = [L.vector(positive=["No Finding"])]
    for name in train.labelled(min_positive=1):
        if name != "No Finding":
            vectors.append(L.vector(positive=[name]))
    return [(builder.build(v, seed=stable_seed("val", k)), v)
            for v in vectors for k in range(per_label)]
