"""U-ViT denoiser (Bao et al. 2023) as used by Diff-CXR stage 1.

A ViT over latent patches in which the timestep and the report are simply more tokens::

    tokens = [time (1) | report context (K) | latent patches (N = (H/p)*(W/p))]   L = 1 + K + N

``depth`` transformer blocks are split into depth/2 in-blocks, one mid-block and depth/2
out-blocks; out-block i receives in-block (depth/2 - 1 - i)'s output through a long skip,
merged as ``Linear(cat[h, skip])`` (2*width -> width). After a final LayerNorm each patch token
is projected to p*p*C values, unpatchified, and smoothed by a 3x3 conv.

The network predicts epsilon and knows nothing about noise schedules: ``timesteps`` is just a
number fed to a sinusoidal embedding. The disease adapter (``cxraug.models.adapter``) controls it
through ``skip_residuals`` / ``mid_residual``, added to the long skips and after the mid block.

Blocks are diffusers' ``BasicTransformerBlock`` (pre-LayerNorm self-attention + GELU MLP, no
cross-attention), whose attention runs ``F.scaled_dot_product_attention``: torch picks the
fastest available backend itself (the flash kernel on CPU).
"""

from __future__ import annotations

import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.embeddings import TimestepEmbedding, Timesteps, get_2d_sincos_pos_embed
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from cxraug.core.artifacts import Component, register
from cxraug.core.errors import CxraugError
from cxraug.models.config import DenoiserConfig

# Named constructor-argument sets. "paper" is Diff-CXR's denoiser (~58M parameters); the "cpu-*"
# sets are for 16x16 latents (128 px images) so that training fits a laptop CPU. context_dim of the
# cpu sets matches the offline MiniLM-L6 encoder (width 384); change it if the text stage differs.
PRESETS: dict[str, dict] = {
    "paper": {"in_channels": 4, "latent_size": 32, "patch_size": 2, "width": 512, "depth": 16,
              "heads": 8, "context_dim": 768, "num_context_tokens": 77},
    "cpu-256": {"in_channels": 4, "latent_size": 16, "patch_size": 2, "width": 256, "depth": 8,
                "heads": 4, "context_dim": 384, "num_context_tokens": 77},
    "cpu-192": {"in_channels": 4, "latent_size": 16, "patch_size": 2, "width": 192, "depth": 6,
                "heads": 3, "context_dim": 384, "num_context_tokens": 77},
    "tiny": {"in_channels": 4, "latent_size": 8, "patch_size": 2, "width": 32, "depth": 2,
             "heads": 2, "context_dim": 16, "num_context_tokens": 4},
}


def _init_weights(m: nn.Module) -> None:
    """U-ViT's init: truncated-normal(0.02) linear weights, zero biases, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class TokenEmbed(nn.Module):
    """(latent, timesteps, context) -> token sequence with position embeddings.

    x [B, C, H, W], timesteps scalar or [B] (int or float), context [B, K, context_dim]
    -> tokens [B, 1 + K + N, width], N = (H/p)*(W/p).
    """

    def __init__(self, in_channels: int, latent_size: int, patch_size: int, width: int,
                 context_dim: int, num_context_tokens: int, time_mlp: bool,
                 learned_pos_embed: bool):
        super().__init__()
        if latent_size % patch_size:
            raise ValueError(f"latent_size {latent_size} is not a multiple of patch_size {patch_size}")
        self.latent_size, self.patch_size = latent_size, patch_size
        self.num_extras = 1 + num_context_tokens  # time token + context tokens
        grid = latent_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels, width, patch_size, stride=patch_size)
        # flip_sin_to_cos=True, shift 0: the [cos | sin] embedding U-ViT uses.
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        # U-ViT's text-to-image models feed the sinusoid straight in (mlp_time_embed=False).
        self.time_embed = (TimestepEmbedding(width, 4 * width, out_dim=width) if time_mlp
                           else nn.Identity())
        self.context_embed = nn.Linear(context_dim, width)
        num_tokens = self.num_extras + grid * grid
        if learned_pos_embed:
            self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, width))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:  # fixed 2D sincos on patches, zeros on the time/context tokens (they carry their own order)
            pe = get_2d_sincos_pos_embed(width, grid, cls_token=True, extra_tokens=self.num_extras,
                                         base_size=grid)
            self.register_buffer("pos_embed", pe[None].float(), persistent=False)

    def forward(self, x: Tensor, timesteps: Tensor | float, context: Tensor,
                context_residual: Tensor | None = None) -> Tensor:
        """context_residual [B, K, width], optional: added to the projected context tokens
        (the disease adapter's hint enters here)."""
        B, _, H, W = x.shape
        if H != self.latent_size or W != self.latent_size:
            raise ValueError(f"latent is {H}x{W}, this model was built for "
                             f"{self.latent_size}x{self.latent_size}")
        if context.shape[:2] != (B, self.num_extras - 1) or context.shape[2] != self.context_embed.in_features:
            raise ValueError(f"context has shape {tuple(context.shape)}, expected "
                             f"[{B}, {self.num_extras - 1}, {self.context_embed.in_features}]")
        t = torch.as_tensor(timesteps, device=x.device)
        if t.ndim == 0:
            t = t.expand(B)
        if t.shape != (B,):
            raise ValueError(f"timesteps has shape {tuple(t.shape)}, expected a scalar or [{B}]")
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)               # [B, N, width]
        time = self.time_embed(self.time_proj(t).to(x.dtype)).unsqueeze(1)     # [B, 1, width]
        ctx = self.context_embed(context)                                       # [B, K, width]
        if context_residual is not None:
            ctx = ctx + context_residual
        return torch.cat([time, ctx, patches], dim=1) + self.pos_embed


class UViTBlock(nn.Module):
    """Pre-LN transformer block; out-blocks first merge the long skip: h = Linear(cat[h, skip]).

    h [B, L, width] (+ skip [B, L, width]) -> [B, L, width].
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, qkv_bias: bool,
                 skip: bool = False, checkpointing: bool = False):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.skip_linear = nn.Linear(2 * width, width) if skip else None
        self.block = BasicTransformerBlock(width, heads, width // heads, activation_fn="gelu",
                                           attention_bias=qkv_bias,
                                           ff_inner_dim=int(width * mlp_ratio))
        self.checkpointing = checkpointing

    def _forward(self, h: Tensor, skip: Tensor | None) -> Tensor:
        if self.skip_linear is not None:
            h = self.skip_linear(torch.cat([h, skip], dim=-1))
        return self.block(h)

    def forward(self, h: Tensor, skip: Tensor | None = None) -> Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            # Recompute activations in backward: ~1/3 more compute for far less memory.
            return checkpoint(self._forward, h, skip, use_reentrant=False)
        return self._forward(h, skip)


def make_trunk(width: int, depth: int, heads: int, mlp_ratio: float, qkv_bias: bool,
               checkpointing: bool) -> tuple[nn.ModuleList, UViTBlock]:
    """depth/2 in-blocks and the mid-block (shared by the U-ViT and its adapter copy)."""
    if depth < 2 or depth % 2:
        raise ValueError(f"depth must be an even number >= 2 (depth/2 in- and out-blocks), got {depth}")
    in_blocks = nn.ModuleList(UViTBlock(width, heads, mlp_ratio, qkv_bias, False, checkpointing)
                              for _ in range(depth // 2))
    return in_blocks, UViTBlock(width, heads, mlp_ratio, qkv_bias, False, checkpointing)


@register
class UViT(Component):
    """U-ViT epsilon predictor over VAE latents, conditioned on K report tokens.

    forward: x [B, C, H, W] (noisy latent), timesteps scalar or [B], context [B, K, context_dim]
    -> eps [B, C, H, W]. With the paper preset: C=4, H=W=32, K=77, context_dim=768, 334 tokens.
    """

    def __init__(self, in_channels: int = 4, latent_size: int = 32, patch_size: int = 2,
                 width: int = 512, depth: int = 16, heads: int = 8, mlp_ratio: float = 4.0,
                 context_dim: int = 768, num_context_tokens: int = 77, time_mlp: bool = False,
                 learned_pos_embed: bool = True, qkv_bias: bool = False, final_conv: bool = True,
                 gradient_checkpointing: bool = False):
        super().__init__()
        self.save_args(locals())
        self.in_channels, self.patch_size, self.grid = in_channels, patch_size, latent_size // patch_size
        self.embed = TokenEmbed(in_channels, latent_size, patch_size, width, context_dim,
                                num_context_tokens, time_mlp, learned_pos_embed)
        self.in_blocks, self.mid_block = make_trunk(width, depth, heads, mlp_ratio, qkv_bias,
                                                    gradient_checkpointing)
        self.out_blocks = nn.ModuleList(
            UViTBlock(width, heads, mlp_ratio, qkv_bias, True, gradient_checkpointing)
            for _ in range(depth // 2))
        self.norm = nn.LayerNorm(width)
        self.decoder_pred = nn.Linear(width, patch_size * patch_size * in_channels)
        self.final_layer = (nn.Conv2d(in_channels, in_channels, 3, padding=1) if final_conv
                            else nn.Identity())
        self.apply(_init_weights)  # convs keep torch's default init, as in U-ViT

    def unembed(self, h: Tensor) -> Tensor:
        """Tokens [B, L, width] -> eps [B, C, H, W] (drops the time/context tokens)."""
        h = self.decoder_pred(self.norm(h))[:, self.embed.num_extras:]          # [B, N, p*p*C]
        B, p, C, g = h.shape[0], self.patch_size, self.in_channels, self.grid
        # 'B (h w) (p1 p2 C) -> B C (h p1) (w p2)', U-ViT's patch layout
        h = h.reshape(B, g, g, p, p, C).permute(0, 5, 1, 3, 2, 4).reshape(B, C, g * p, g * p)
        return self.final_layer(h)

    def forward(self, x: Tensor, timesteps: Tensor | float, context: Tensor,
                skip_residuals: list[Tensor] | None = None,
                mid_residual: Tensor | None = None) -> Tensor:
        """Predict eps. skip_residuals: depth/2 tensors [B, L, width], one per in-block, added to
        that block's long skip; mid_residual [B, L, width] added after the mid-block."""
        h = self.embed(x, timesteps, context)
        skips = []
        for block in self.in_blocks:
            h = block(h)
            skips.append(h)
        if skip_residuals is not None:
            if len(skip_residuals) != len(skips):
                raise ValueError(f"got {len(skip_residuals)} skip_residuals, expected {len(skips)}")
            skips = [s + r for s, r in zip(skips, skip_residuals)]
        h = self.mid_block(h)
        if mid_residual is not None:
            h = h + mid_residual
        for block in self.out_blocks:
            h = block(h, skips.pop())
        return self.unembed(h)


def build_denoiser(cfg: DenoiserConfig, space, encoder) -> UViT:
    """A fresh U-ViT shaped by ``cfg`` (a preset, then its field overrides), fitted to the latent
    space (``space.latent_shape``) and the report encoder (``encoder.width`` and
    ``encoder.cond_tokens``)."""
    if cfg.preset not in PRESETS:
        raise CxraugError(f"denoiser.preset {cfg.preset!r}: choose one of {', '.join(PRESETS)}")
    args = dict(PRESETS[cfg.preset])
    for k in ("width", "depth", "heads", "patch_size", "mlp_ratio"):
        v = getattr(cfg, k)
        if v is not None:
            args[k] = v
    c, h, _ = space.latent_shape
    args.update(in_channels=c, latent_size=h, context_dim=encoder.width,
                num_context_tokens=encoder.cond_tokens,
                gradient_checkpointing=cfg.gradient_checkpointing)
    return UViT(**args)
