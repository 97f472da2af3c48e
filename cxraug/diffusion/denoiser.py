"""One call signature for every denoiser cxraug trains or samples: ``net(x_t, t, cond)``.

    net = Denoiser.compose(uvit)                   # stage 1: the U-ViT alone
    net = Denoiser.compose(uvit, adapter)          # stage 2: frozen U-ViT steered by DKIM
    pred = net(x_t, t, Condition(context, hint))   # epsilon or v, [B, C, h, w]

:class:`Condition` carries what the prediction is conditioned on: the report context and the
DKIM hint (the encoded template sentence of the target labels). A :class:`Denoiser` knows
whether its network reads the hint; the training loss (:mod:`cxraug.diffusion.loss`) and the
sampler (:func:`cxraug.diffusion.sampling.sample`) only ever call ``net(x_t, t, cond)``, so
neither branches on the stage or on the adapter.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from cxraug.models.adapter import ControlledUViT


@dataclasses.dataclass(frozen=True)
class Condition:
    """Conditioning of a batch: report ``context`` ``[B, K, D]`` and, for a DKIM-controlled
    denoiser, the disease ``hint`` ``[B, K, D]`` (``None`` where there is none).

    The null condition of classifier-free guidance has the same fields, unbatched ``[K, D]``
    (the encoding of empty text, for both)."""

    context: Tensor
    hint: Tensor | None = None

    def drop(self, mask: Tensor, null: Condition) -> Condition:
        """Rows where ``mask`` ``[B]`` (bool) is set take the null condition: report and hint
        together, as in the paper."""
        m = mask[:, None, None]
        hint = None if self.hint is None else torch.where(m, null.hint, self.hint)
        return Condition(torch.where(m, null.context, self.context), hint)

    def drop_report(self, mask: Tensor, null: Condition) -> Condition:
        """Rows where ``mask`` is set take the null report context; the hint stays."""
        return dataclasses.replace(self, context=torch.where(mask[:, None, None], null.context,
                                                             self.context))

    def with_null(self, null: Condition) -> Condition:
        """The batch followed by as many null rows (the doubled batch of guided sampling). A null
        condition without a hint uses its context as the null hint."""
        b = self.context.shape[0]
        ctx = torch.cat([self.context, null.context.expand(b, *null.context.shape)])
        if self.hint is None:
            return Condition(ctx)
        nh = null.hint if null.hint is not None else null.context
        return Condition(ctx, torch.cat([self.hint, nh.expand(b, *nh.shape)]))


class Denoiser(nn.Module):
    """``forward(x_t [B, C, h, w], t [B], cond: Condition) -> prediction [B, C, h, w]``.

    Wraps a network with the U-ViT's signature ``net(x, t, context)`` (``uses_hint=False``) or a
    DKIM-controlled one, ``net(x, t, context, hint)`` (``uses_hint=True``); ``net`` may also be a
    plain callable, e.g. the bf16 autocast wrapper of ``cxraug synth``. A hint in the condition
    of a network that does not read one is ignored.
    """

    def __init__(self, net, uses_hint: bool = False):
        super().__init__()
        self.net, self.uses_hint = net, uses_hint

    @classmethod
    def compose(cls, base: nn.Module, adapter: nn.Module | None = None) -> Denoiser:
        """The stage-1 U-ViT alone, or steered by a DKIM adapter (``ControlledUViT``)."""
        if adapter is None:
            return cls(base, uses_hint=False)

        return cls(ControlledUViT(base, adapter), uses_hint=True)

    def forward(self, x: Tensor, t: Tensor, cond: Condition) -> Tensor:
        if not self.uses_hint:
            return self.net(x, t, cond.context)
        if cond.hint is None:
            raise ValueError("this denoiser is DKIM-controlled: its condition needs a hint")
        return self.net(x, t, cond.context, cond.hint)
