"""Disease-knowledge adapter (DKIM, Diff-CXR stage 2): ControlNet for a U-ViT.

The adapter is a trainable copy of the stage-1 U-ViT's input side (token embedding, in-blocks,
mid-block), initialised from the stage-1 weights. It sees the same noisy latent and timestep; its
context tokens are the report context plus the disease hint::

    ctx_tokens = context_embed(context) + hint_proj(hint)
    hint_proj: ZERO-init Linear(context_dim -> width)

The hint (the encoded template sentence, "There is cardiomegaly. ...") is projected straight to
token width and added to the copied context projection's output. This choice reproduces the
paper's cost exactly: thop counts 29.641 GMACs for base + adapter (a context_dim -> context_dim
projection before context_embed would give 29.656). Each adapter in-block output and the
mid-block output pass through ZERO-init Linear(width -> width) and become the frozen base's
``skip_residuals`` / ``mid_residual``. All zero layers make the controlled model equal the base
at step 0; only the adapter trains.

``ControlledUViT`` composes (frozen base, adapter) at load time and has the U-ViT's call
signature plus ``hint``, so samplers and guidance wrappers treat it as any denoiser.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import Tensor, nn

from cxraug.core.artifacts import Component, register
from cxraug.core.errors import WeightsError
from cxraug.models.uvit import TokenEmbed, UViT, make_trunk


def zero_linear(n_in: int, n_out: int) -> nn.Linear:
    """A Linear whose weight and bias start at exactly 0 (output is 0 until it trains)."""
    layer = nn.Linear(n_in, n_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


@register
class DiseaseAdapter(Component):
    """Trainable control branch. Arguments mirror :class:`UViT` (minus its output side).

    forward: x [B, C, H, W], timesteps scalar or [B], context and hint [B, K, context_dim]
    -> (skip_residuals: depth/2 x [B, L, width], mid_residual [B, L, width]), L = 1 + K + N.
    """

    def __init__(self, in_channels: int = 4, latent_size: int = 32, patch_size: int = 2,
                 width: int = 512, depth: int = 16, heads: int = 8, mlp_ratio: float = 4.0,
                 context_dim: int = 768, num_context_tokens: int = 77, time_mlp: bool = False,
                 learned_pos_embed: bool = True, qkv_bias: bool = False,
                 gradient_checkpointing: bool = False):
        super().__init__()
        self.save_args(locals())
        self.embed = TokenEmbed(in_channels, latent_size, patch_size, width, context_dim,
                                num_context_tokens, time_mlp, learned_pos_embed)
        self.in_blocks, self.mid_block = make_trunk(width, depth, heads, mlp_ratio, qkv_bias,
                                                    gradient_checkpointing)
        self.hint_proj = zero_linear(context_dim, width)
        self.skip_zero = nn.ModuleList(zero_linear(width, width) for _ in range(depth // 2))
        self.mid_zero = zero_linear(width, width)

    @classmethod
    def from_base(cls, base: UViT) -> DiseaseAdapter:
        """An adapter shaped like ``base`` whose copied parts hold base's current weights."""
        accepted = inspect.signature(cls.__init__).parameters
        adapter = cls(**{k: v for k, v in base.args.items() if k in accepted})
        adapter.embed.load_state_dict(base.embed.state_dict())
        adapter.in_blocks.load_state_dict(base.in_blocks.state_dict())
        adapter.mid_block.load_state_dict(base.mid_block.state_dict())
        return adapter.to(next(base.parameters()).device)

    def forward(self, x: Tensor, timesteps: Tensor | float, context: Tensor,
                hint: Tensor) -> tuple[list[Tensor], Tensor]:
        if hint.shape != context.shape:
            raise ValueError(f"hint has shape {tuple(hint.shape)}, expected the context's "
                             f"{tuple(context.shape)}")
        h = self.embed(x, timesteps, context, context_residual=self.hint_proj(hint))
        skip_residuals = []
        for block, zero in zip(self.in_blocks, self.skip_zero):
            h = block(h)
            skip_residuals.append(zero(h))
        return skip_residuals, self.mid_zero(self.mid_block(h))


class ControlledUViT(nn.Module):
    """Frozen stage-1 U-ViT steered by a trainable :class:`DiseaseAdapter`.

    forward: x [B, C, H, W], timesteps scalar or [B], context and hint [B, K, context_dim]
    -> eps [B, C, H, W]. Save the adapter alone (``self.adapter.save_pretrained``); the base
    stays in its own stage-1 folder.
    """

    def __init__(self, base: UViT, adapter: DiseaseAdapter):
        super().__init__()
        shared = [k for k in adapter.args if k != "gradient_checkpointing"]
        mismatch = [k for k in shared if adapter.args[k] != base.args.get(k)]
        if mismatch:
            k = mismatch[0]
            raise WeightsError(f"disease adapter does not fit the base U-ViT: {k}={adapter.args[k]} "
                               f"vs base {k}={base.args.get(k)}; train the adapter from this base")
        self.base = base.requires_grad_(False).eval()
        self.adapter = adapter

    @classmethod
    def load(cls, base_folder: str | Path, adapter_folder: str | Path,
             map_location: str | torch.device = "cpu") -> ControlledUViT:
        """Compose from a stage-1 U-ViT folder and a stage-2 adapter folder."""
        return cls(UViT.from_pretrained(base_folder, map_location),
                   DiseaseAdapter.from_pretrained(adapter_folder, map_location))

    def train(self, mode: bool = True) -> ControlledUViT:
        super().train(mode)
        self.base.eval()  # the base never leaves eval mode
        return self

    def forward(self, x: Tensor, timesteps: Tensor | float, context: Tensor,
                hint: Tensor) -> Tensor:
        skip_residuals, mid_residual = self.adapter(x, timesteps, context, hint)
        # No torch.no_grad here: gradients must flow through the frozen base into the residuals.
        return self.base(x, timesteps, context, skip_residuals=skip_residuals,
                         mid_residual=mid_residual)
