"""The classifier's loss: binary cross-entropy over the labelled entries of a multi-label target."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def masked_bce_with_logits(logits: torch.Tensor, targets: torch.Tensor,
                           pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy averaged over the non-missing (non-NaN) entries of ``targets [B, L]``.

    Missing entries contribute neither loss nor gradient; a batch with no labelled entry gives 0.
    """
    mask = ~torch.isnan(targets)
    loss = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(targets, nan=0.0),
                                              pos_weight=pos_weight, reduction="none")
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def balanced_pos_weight(targets: np.ndarray) -> np.ndarray:
    """``float32 [L]``: negatives / positives per label over non-missing targets, clipped to
    ``[0.1, 100]`` (1 where a label has no positive)."""
    pos = np.nansum(targets == 1, axis=0).astype(np.float64)
    neg = np.nansum(targets == 0, axis=0).astype(np.float64)
    w = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)
    return np.clip(w, 0.1, 100.0).astype(np.float32)
