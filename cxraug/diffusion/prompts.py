"""The texts the denoiser is conditioned on, and their embeddings: one prompt per training image
(its report, or report-like text from its labels), the DKIM hint sentences, the null condition
of classifier-free guidance and the fixed validation prompts of sample grids."""

from __future__ import annotations

import numpy as np
import torch

from cxraug.core.seeds import stable_seed
from cxraug.data import labels as L
from cxraug.data.datasets import CXRDataset
from cxraug.data.templates import PromptBuilder, paper_hint


def prompts_for(ds: CXRDataset, source: str, seed: int) -> list[str]:
    """One text per image: its report when it has one, else report-like text built from its
    labels by the prompt builder, seeded per image so it is the same in every run."""

    builder = PromptBuilder(source=source)
    reports, labels = ds.reports, ds.labels
    return [r if r else builder.build(labels[i], seed=stable_seed(seed, "prompt", ident))
            for i, (ident, r) in enumerate(zip(ds.ids, reports))]


def hints_for(labels: np.ndarray) -> list[str]:
    """DKIM hint sentences (the paper's templates) for raw label vectors ``[N, 14]``."""

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


def validation_prompts(train: CXRDataset, source: str, per_label: int = 1) -> list[tuple[str, np.ndarray]]:
    """Fixed prompts for sample grids: one label vector per positive observation seen in
    training (single-disease) plus No Finding, each turned into text deterministically."""

    builder = PromptBuilder(source=source)
    vectors = [L.vector(positive=["No Finding"])]
    for name in train.labelled(min_positive=1):
        if name != "No Finding":
            vectors.append(L.vector(positive=[name]))
    return [(builder.build(v, seed=stable_seed("val", k)), v)
            for v in vectors for k in range(per_label)]
