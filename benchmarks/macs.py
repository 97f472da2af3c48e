"""Parameters and multiply-accumulates (MACs) of one denoiser forward pass at batch 1.

    python benchmarks/macs.py            # prints a table, writes benchmarks/results/macs.json

Two counts per model:
  * thop   -- thop.profile's default rules: Linear, Conv and LayerNorm modules. This is the
              counting Diff-CXR reports ("29.641 GFLOPs" = thop MACs of U-ViT + control branch).
              thop hooks modules only, so the attention products inside
              F.scaled_dot_product_attention are invisible to it.
  * total  -- thop + the attention matmuls QK^T and AV: 2 * L^2 * width MACs per block
              (L = 1 + K + N tokens), counted by a forward hook on every diffusers Attention.
Softmax, GELU, residual adds and the time sinusoid are not counted by either.
"""

from __future__ import annotations

import json
from pathlib import Path

import thop
import torch
from diffusers.models.attention_processor import Attention
from rich.console import Console
from rich.table import Table

from cxraug.models.adapter import ControlledUViT, DiseaseAdapter
from cxraug.models.uvit import PRESETS, UViT

PAPER_REFERENCE_GMACS = {"paper U-ViT": 19.3, "paper U-ViT + DiseaseAdapter": 29.641}
OUT = Path(__file__).parent / "results" / "macs.json"


def attention_macs(model: torch.nn.Module, inputs: tuple) -> int:
    """QK^T + AV MACs of one forward: per Attention call, 2 * B * L_q * L_kv * inner_dim."""
    total = 0

    def hook(module: Attention, args, kwargs, out):
        nonlocal total
        q = args[0] if args else kwargs["hidden_states"]
        kv = kwargs.get("encoder_hidden_states")
        kv = q if kv is None else kv
        total += 2 * q.shape[0] * q.shape[1] * kv.shape[1] * module.inner_dim

    handles = [m.register_forward_hook(hook, with_kwargs=True)
               for m in model.modules() if isinstance(m, Attention)]
    with torch.no_grad():
        model(*inputs)
    for h in handles:
        h.remove()
    return total


def measure(name: str, preset: str, with_adapter: bool) -> dict:
    args = PRESETS[preset]
    torch.manual_seed(0)
    base = UViT(**args).eval()
    k, s = args["num_context_tokens"], args["latent_size"]
    x = torch.randn(1, args["in_channels"], s, s)
    t = torch.tensor([500])
    ctx = torch.randn(1, k, args["context_dim"])
    if with_adapter:
        adapter = DiseaseAdapter.from_base(base)
        model, inputs = ControlledUViT(base, adapter).eval(), (x, t, ctx, torch.randn_like(ctx))
        adapter_params = sum(p.numel() for p in adapter.parameters())
    else:
        model, inputs, adapter_params = base, (x, t, ctx), 0
    thop_macs, _ = thop.profile(model, inputs=inputs, verbose=False)
    attn = attention_macs(model, inputs)
    return {
        "model": name, "preset": preset, "args": args,
        "tokens": 1 + k + (s // args["patch_size"]) ** 2,
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": adapter_params or sum(p.numel() for p in base.parameters()),
        "thop_gmacs": thop_macs / 1e9,
        "attention_gmacs": attn / 1e9,
        "total_gmacs": (thop_macs + attn) / 1e9,
        "paper_gmacs": PAPER_REFERENCE_GMACS.get(name),
    }


def main() -> None:
    rows = [measure(f"{label} U-ViT{' + DiseaseAdapter' if adapter else ''}", preset, adapter)
            for label, preset in [("paper", "paper"), ("cpu-256", "cpu-256"), ("cpu-192", "cpu-192")]
            for adapter in (False, True)]
    table = Table(title="Denoiser cost, one forward pass at batch 1")
    for col in ("model", "latent", "tokens", "params (M)", "trainable (M)", "thop GMACs",
                "+ attention", "total GMACs", "paper"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        a = r["args"]
        table.add_row(r["model"], f"{a['in_channels']}x{a['latent_size']}^2", str(r["tokens"]),
                      f"{r['params'] / 1e6:.3f}", f"{r['trainable_params'] / 1e6:.3f}",
                      f"{r['thop_gmacs']:.3f}", f"{r['attention_gmacs']:.3f}",
                      f"{r['total_gmacs']:.3f}",
                      "" if r["paper_gmacs"] is None else f"{r['paper_gmacs']}")
    Console(width=140).print(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"unit": "GMACs per forward pass, batch 1", "rows": rows}, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
