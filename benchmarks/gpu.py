"""The GPU path of Diff-CXR, measured: one prepared script for one CUDA GPU, at most 8 minutes.

    python benchmarks/gpu.py [--out benchmarks/results/gpu.json]     # a CUDA machine, paper sizes
    python benchmarks/gpu.py --tiny --out /tmp/gpu.json              # anywhere: tiny, CPU, seconds

What it measures, in this order (one function per measurement; a part whose estimate does not fit
in what is left of the time budget is skipped and listed under ``skipped``):

1. ``peak_matmul``: the device's dense matrix-product rate (bf16 8192^3 on CUDA, CUDA events,
   after warm-up). Every utilisation figure below is against this measured peak.
2. ``train``: one training step of the paper-preset U-ViT (stage 1) and of the DKIM adapter on the
   frozen U-ViT (stage 2), as ``cxraug.diffusion.denoiser_training`` does it: bf16 autocast, fp32 MSE loss,
   backward, grad-norm clip, fused AdamW, EMA update; inputs pre-drawn on the device; at the
   largest batch that fits up to 256. Eager without and with gradient checkpointing, then
   ``torch.compile`` (last: optional). FLOPs of one forward+backward are counted with
   ``torch.utils.flop_counter.FlopCounterMode`` on the eager model without checkpointing at the
   same batch (recomputation is not useful work): MFU = FLOPs/step / step time / peak.
3. ``sample``: 256 px images through ``DiffCXRPipeline`` (DPM-Solver++ 50 steps, guidance as one
   doubled batch, the adapter, VAE decode; the denoiser under bf16 autocast as ``cxraug synth``
   runs it) at batch 64: images/s against the FLOP ceiling (measured peak / FLOPs per image,
   counted over one whole pipeline call), and a plain two-pass diffusers-style loop on the same
   models (conditional and unconditional forward as two calls per step,
   DPMSolverMultistepScheduler) as the baseline.
4. ``cli``: the user's path in subprocesses: ``cxraug train --stage 2 --recipe
   recipes/diffcxr-paper.yaml`` for a few dozen steps per stage on the embedded Kermany sample
   (upsampled to 256 px by the loader), with an SD-VAE-shaped autoencoder and a BiomedCLIP-shaped
   report encoder built from their configs with random weights in the work folder; the same
   command with more steps (resume); ``cxraug synth`` for a few images. Wall time and success
   per step, and the samples/s that the training loop itself logged.

Writes one JSON (``--out``; no absolute paths; rewritten after every part, so a run killed from
outside still leaves what it measured) and prints a short table. ``--tiny`` runs the same
functions with tiny configs on the CPU (tiny U-ViT preset, 64 px, tiny VAE and text towers,
``torch.compile`` with the ``eager`` backend: the capture runs, no C++ build; the paper's fixed
prompt templates instead of the mined bank); ``tests/benchmarks/test_gpu_bench.py`` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # runnable from a checkout without installing cxraug

T_IMPORT = time.perf_counter()  # the budget counts from here, imports included

import numpy as np
import torch
import torch.nn.functional as F

RECIPE = REPO / "recipes" / "diffcxr-paper.yaml"
REPORTS = ["Right lower lobe consolidation, consistent with pneumonia.",
           "Heart size is normal. Lungs are clear. No pleural effusion or pneumothorax.",
           "Patchy opacity in the left lung base. Possible early pneumonia.",
           "No acute cardiopulmonary process."]
PUBMEDBERT_HUB = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
BERT = {"paper": {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
                  "num_attention_heads": 12, "intermediate_size": 3072,
                  "max_position_embeddings": 512, "type_vocab_size": 2},
        "tiny": {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
                 "num_attention_heads": 1, "intermediate_size": 64,
                 "max_position_embeddings": 64, "type_vocab_size": 2}}


# ----------------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU run and ``--tiny``."""

    tiny: bool
    budget_s: float
    gemm_n: int
    gemm_warmup: int
    gemm_iters: int
    preset: str
    max_batch: int
    warmup_steps: int
    timed_steps: int
    compile_backend: str
    compiled: tuple[tuple[int, bool], ...]  # (stage, checkpointing) measured compiled
    image_size: int
    max_tokens: int
    cond_tokens: int
    sample_batch: int
    sample_steps: int
    sample_repeats: int
    prompts: str
    cli_images: int                    # about this many training images in the CLI run
    cli_steps: tuple[int, int]         # train.steps, adapter.steps (first run)
    cli_resume_steps: tuple[int, int]  # the same, rerun
    cli_batch: int | None              # None: the recipe's (256)
    cli_caps_s: tuple[int, int, int]   # time limits of train, resume, synth
    synth_n: int


GPU = Sizes(tiny=False, budget_s=480, gemm_n=8192, gemm_warmup=10, gemm_iters=50, preset="paper",
            max_batch=256, warmup_steps=3, timed_steps=15, compile_backend="inductor",
            compiled=((1, False), (2, False), (1, True)), image_size=256, max_tokens=256,
            cond_tokens=77, sample_batch=64, sample_steps=50, sample_repeats=2, prompts="mined",
            cli_images=64, cli_steps=(30, 20), cli_resume_steps=(40, 30), cli_batch=None,
            cli_caps_s=(150, 90, 60), synth_n=4)
TINY = Sizes(tiny=True, budget_s=600, gemm_n=256, gemm_warmup=5, gemm_iters=50, preset="tiny",
             max_batch=8, warmup_steps=1, timed_steps=3, compile_backend="eager",
             compiled=((1, False), (2, False)), image_size=64, max_tokens=32,
             cond_tokens=4, sample_batch=4, sample_steps=10, sample_repeats=1, prompts="paper",
             cli_images=12, cli_steps=(3, 2), cli_resume_steps=(4, 3), cli_batch=4,
             cli_caps_s=(90, 90, 90), synth_n=2)


class Budget:
    """Wall-clock guard: a part runs only when its estimate fits in what is left."""

    def __init__(self, seconds: float, t0: float | None = None):
        self.t0, self.total = t0 or time.perf_counter(), float(seconds)
        self.skipped: list[dict] = []

    def left(self) -> float:
        return self.total - (time.perf_counter() - self.t0)

    def allows(self, part: str, need_s: float) -> bool:
        if self.left() >= need_s:
            return True
        self.skipped.append({"part": part, "reason": f"time budget: {max(0.0, self.left()):.0f} s "
                                                     f"left, needs about {need_s:.0f} s"})
        return False


# ----------------------------------------------------------------------------------- helpers

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, iters: int, device: torch.device) -> float:
    """Seconds for ``iters`` calls of ``fn`` (CUDA events on a GPU, perf_counter on the CPU)."""
    if device.type == "cuda":
        sync(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return time.perf_counter() - t0


def reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def flop_counter():
    """``FlopCounterMode`` that also counts the CPU flash-attention kernel (torch registers the
    CUDA attention kernels only; on the CPU attention would count as 0)."""
    from torch.utils import flop_counter as fc

    aten, extra = torch.ops.aten, {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        extra[aten._scaled_dot_product_flash_attention_for_cpu] = \
            lambda q, k, v, *a, out_shape=None, **kw: fc.sdpa_flop_count(q, k, v)
        extra[aten._scaled_dot_product_flash_attention_for_cpu_backward] = \
            lambda g, q, k, v, *a, out_shape=None, **kw: fc.sdpa_backward_flop_count(g, q, k, v)
    return fc.FlopCounterMode(display=False, custom_mapping=extra)


def autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)


class Bf16Denoiser:
    """The denoiser under bf16 autocast, returning float32, as ``cxraug synth`` runs it
    (``cxraug.cohorts.generator.Autocast``): the solver's arithmetic stays in float32."""

    def __init__(self, model, device: torch.device, dtype: torch.dtype):
        self.model, self.device, self.dtype = model, device, dtype

    def __call__(self, *args):
        with autocast(self.device, self.dtype):
            return self.model(*args).float()


_SCRUB: list[tuple[str, str]] = []


def scrub(text: str) -> str:
    """No absolute paths in the results: the work folder, the repository and home become tags."""
    for path, tag in _SCRUB:
        text = text.replace(path, tag)
    return text


def first_line(e: BaseException) -> str:
    lines = f"{type(e).__name__}: {e}".strip().splitlines()
    return scrub(lines[0][:300] if lines else type(e).__name__)


# ----------------------------------------------------------------------------------- components

def make_sd_vae_folder(folder: Path, sizes: Sizes) -> str:
    """A diffusers AutoencoderKL with stabilityai/sd-vae-ft-mse's config (tiny: same layout,
    narrow), random weights, ``save_pretrained``: what ``load_pretrained_vae`` reads."""
    from diffusers import AutoencoderKL

    chans, layers, groups = ((8, 16, 16, 16), 1, 8) if sizes.tiny else ((128, 256, 512, 512), 2, 32)
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=chans,
                        layers_per_block=layers, act_fn="silu", latent_channels=4,
                        norm_num_groups=groups, sample_size=sizes.image_size,
                        scaling_factor=0.18215)
    vae.save_pretrained(str(folder), safe_serialization=True)
    n = sum(p.numel() for p in vae.parameters())
    return f"sd-vae-ft-mse-shaped AutoencoderKL, random weights, {n / 1e6:.1f}M parameters"


def write_bert_tokenizer(folder: Path, vocab_size: int) -> None:
    """An uncased WordPiece vocabulary of BERT's size (special tokens, characters, a few report
    words, padding entries): the token count per report is what costs, not the word pieces."""
    words = sorted({w.strip(string.punctuation).lower() for r in REPORTS for w in r.split()} - {""})
    special = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = special + chars + ["##" + c for c in chars] + words
    vocab += [f"[unused{i}]" for i in range(99, 99 + vocab_size - len(vocab))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}))


def make_biomedclip_folder(folder: Path, sizes: Sizes) -> str:
    """An open_clip folder shaped like BiomedCLIP's hub repo, random weights: PubMedBERT-base text
    tower (BERT 12 x 768, 512 positions) + timm ViT-B/16 image tower at 224 px, embed 512; its
    open_clip_config.json names the real PubMedBERT hub id, as the download does, so the loader
    rebuilds the BERT config from the checkpoint offline. Tiny: the same layout, narrow."""
    from open_clip.model import CustomTextCLIP
    from safetensors.torch import save_file
    from transformers import BertConfig

    folder.mkdir(parents=True, exist_ok=True)
    bert_cfg = BERT["tiny" if sizes.tiny else "paper"]
    write_bert_tokenizer(folder, bert_cfg["vocab_size"])
    bert_dir = folder.parent / f".{folder.name}-bert-config"
    BertConfig(**bert_cfg).save_pretrained(str(bert_dir))
    text_cfg = {"hf_model_name": str(bert_dir), "hf_tokenizer_name": str(bert_dir),
                "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler",
                "context_length": 256}
    if sizes.tiny:
        embed, vision_cfg = 16, {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                                 "head_width": 16}
    else:
        embed, vision_cfg = 512, {"timm_model_name": "vit_base_patch16_224",
                                  "timm_model_pretrained": False, "timm_pool": "",
                                  "timm_proj": "linear", "image_size": 224}
    torch.manual_seed(0)
    clip = CustomTextCLIP(embed, vision_cfg, dict(text_cfg, hf_model_pretrained=False))
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    n = sum(p.numel() for p in clip.parameters())
    del clip
    shutil.rmtree(bert_dir, ignore_errors=True)
    text_cfg["hf_model_name"] = text_cfg["hf_tokenizer_name"] = PUBMEDBERT_HUB
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": {"embed_dim": embed, "vision_cfg": vision_cfg, "text_cfg": text_cfg},
         "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                            "std": [0.26862954, 0.26130258, 0.27577711]}}))
    return (f"BiomedCLIP-shaped open_clip folder, random weights, {n / 1e6:.1f}M parameters "
            f"(BERT {bert_cfg['num_hidden_layers']} x {bert_cfg['hidden_size']}); synthetic "
            f"uncased WordPiece vocabulary of {bert_cfg['vocab_size']}")


@dataclass
class Components:
    """The frozen parts, built once in the work folder, shared by sampling and the CLI run."""

    vae: str                 # folder name inside the work folder
    vae_desc: str
    text_encoder: str        # biomedclip, or minilm when the BiomedCLIP-shaped folder fails
    text_path: str | None    # folder name inside the work folder
    text_desc: str


def build_components(work: Path, sizes: Sizes) -> Components:
    vae_desc = make_sd_vae_folder(work / "sd-vae", sizes)
    try:
        from cxraug.text.encoders import build_text_encoder

        text_desc = make_biomedclip_folder(work / "biomedclip", sizes)
        build_text_encoder("biomedclip", str(work / "biomedclip"), sizes.max_tokens)  # loads?
        return Components("sd-vae", vae_desc, "biomedclip", "biomedclip", text_desc)
    except Exception as e:  # noqa: BLE001 - any failure means: fall back, and say why
        return Components("sd-vae", vae_desc, "minilm", None,
                          f"offline MiniLM-L6 (the BiomedCLIP-shaped folder failed: {first_line(e)})")


# ----------------------------------------------------------------------------------- 1. peak

def measure_peak_matmul(device: torch.device, dtype: torch.dtype, sizes: Sizes) -> dict:
    """Dense matrix-product rate of ``n x n @ n x n`` in ``dtype``, after warm-up."""
    n = sizes.gemm_n
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    for _ in range(sizes.gemm_warmup):
        a @ b
    seconds = timed(lambda: a @ b, sizes.gemm_iters, device)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "iters": sizes.gemm_iters,
            "ms_per_matmul": 1e3 * seconds / sizes.gemm_iters,
            "tflops": 2 * n**3 * sizes.gemm_iters / seconds / 1e12}


# ----------------------------------------------------------------------------------- 2. train

def build_train_model(stage: int, preset: str, checkpointing: bool, device: torch.device):
    """``(model, trainable)``. Stage 1: the U-ViT. Stage 2: a DKIM adapter (copy of the U-ViT's
    input side) on the frozen U-ViT, composed as ``cxraug.diffusion.denoiser_training.run_stage`` does."""
    from cxraug.models.adapter import ControlledUViT, DiseaseAdapter
    from cxraug.models.uvit import PRESETS, UViT

    torch.manual_seed(0)
    base = UViT(**PRESETS[preset], gradient_checkpointing=checkpointing).to(device)
    if stage == 1:
        return base, base
    adapter = DiseaseAdapter.from_base(base)
    return ControlledUViT(base, adapter).to(device), adapter


class TrainStep:
    """One optimisation step of ``cxraug.diffusion.denoiser_training.train_denoiser`` on fixed inputs."""

    def __init__(self, stage: int, preset: str, checkpointing: bool, batch: int,
                 device: torch.device, dtype: torch.dtype, compile_backend: str | None = None):
        from cxraug.diffusion.config import TrainConfig
        from cxraug.diffusion.denoiser_training import ema_model
        from cxraug.diffusion.sampling import scheduler_for

        self.stage, self.batch, self.device, self.dtype = stage, batch, device, dtype
        self.model, self.trainable = build_train_model(stage, preset, checkpointing, device)
        self.model.train()
        self.params = [p for p in self.trainable.parameters() if p.requires_grad]
        tc = TrainConfig()
        self.fused = device.type == "cuda"
        # recipes/diffcxr-paper.yaml: AdamW 2e-4, wd 0.03, betas (0.9, 0.9), EMA 0.9999
        self.opt = torch.optim.AdamW(self.params, lr=2e-4, weight_decay=0.03, betas=(0.9, 0.9),
                                     **({"fused": True} if self.fused else {}))
        self.ema = ema_model(self.trainable, 0.9999).to(device)
        self.compiled = compile_backend is not None
        self.forward = torch.compile(self.model, backend=compile_backend) if self.compiled else self.model
        # Inputs drawn once, on the device: the step measures the model and the optimiser.
        args = self.model.args if stage == 1 else self.model.base.args
        c, s = args["in_channels"], args["latent_size"]
        k, d = args["num_context_tokens"], args["context_dim"]
        g = torch.Generator(device=device).manual_seed(0)
        alphas = scheduler_for(tc).alphas_cumprod.to(device)
        z = torch.randn(batch, c, s, s, device=device, generator=g)
        self.eps = torch.randn(batch, c, s, s, device=device, generator=g)
        self.t = torch.randint(0, tc.num_train_timesteps, (batch,), device=device, generator=g)
        a = alphas[self.t].view(-1, 1, 1, 1)
        self.x_t = a.sqrt() * z + (1 - a).sqrt() * self.eps
        null = torch.randn(k, d, device=device, generator=g)
        drop = (torch.rand(batch, device=device, generator=g) < tc.cond_drop)[:, None, None]
        self.ctx = torch.where(drop, null, torch.randn(batch, k, d, device=device, generator=g))
        self.hint = torch.where(drop, null, torch.randn(batch, k, d, device=device, generator=g))
        self.grad_clip = tc.grad_clip

    def loss(self, model=None) -> torch.Tensor:
        model = model or self.forward
        with autocast(self.device, self.dtype):
            pred = (model(self.x_t, self.t, self.ctx) if self.stage == 1
                    else model(self.x_t, self.t, self.ctx, self.hint))
        return F.mse_loss(pred.float(), self.eps)

    def __call__(self) -> None:
        loss = self.loss()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.opt.step()
        self.ema.update_parameters(self.trainable)

    def count_flops(self) -> int:
        """FLOPs of one eager forward + backward, counted op by op."""
        self.opt.zero_grad(set_to_none=True)
        with flop_counter() as counter:
            self.loss(self.model).backward()
        self.opt.zero_grad(set_to_none=True)
        return int(counter.get_total_flops())

    def release(self) -> None:
        for name in ("forward", "model", "trainable", "opt", "ema", "params"):
            setattr(self, name, None)
        if self.compiled:
            torch._dynamo.reset()


def fit_batch(make, max_batch: int, device: torch.device) -> tuple[TrainStep, int]:
    """The largest power-of-two batch up to ``max_batch`` whose step runs (two steps tried)."""
    batch = max_batch
    while True:
        reset_memory(device)
        step = None
        try:
            step = make(batch)
            step()
            step()
            sync(device)
            return step, batch
        except Exception as e:
            if not is_oom(e) or batch == 1:
                raise
        if step is not None:  # after the except block: its traceback no longer pins tensors
            step.release()
        step = None
        batch //= 2


def model_flops(stage: int, batch: int, sizes: Sizes, device: torch.device, dtype: torch.dtype,
                cache: dict, step: TrainStep | None) -> tuple[int, int]:
    """``(FLOPs of one forward+backward at batch, batch counted at)``: counted on the eager model
    without checkpointing (``step`` when it is one), once per (stage, batch). When that batch
    only fits with checkpointing, the count at the largest batch counted so far is scaled (every
    op is per sample, so FLOPs are linear in the batch)."""
    if (stage, batch) not in cache:
        counted = [b for s, b in cache if s == stage]
        if step is not None:
            cache[stage, batch] = step.count_flops()
        elif counted and max(counted) < batch:
            b0 = max(counted)
            return cache[stage, b0] * batch // b0, b0
        else:
            counter = TrainStep(stage, sizes.preset, False, batch, device, dtype)
            cache[stage, batch] = counter.count_flops()
            counter.release()
    return cache[stage, batch], batch


def measure_train(stage: int, checkpointing: bool, compiled: bool, sizes: Sizes,
                  device: torch.device, dtype: torch.dtype, peak_tflops: float,
                  flops_cache: dict, batch: int | None = None) -> dict:
    """samples/s, MFU and peak memory of one training variant (``batch``: fixed, else fitted)."""
    backend = sizes.compile_backend if compiled else None

    def make(b: int) -> TrainStep:
        return TrainStep(stage, sizes.preset, checkpointing, b, device, dtype, backend)

    t0 = time.perf_counter()
    if batch is None:
        step, batch = fit_batch(make, sizes.max_batch, device)
    else:
        reset_memory(device)
        step = make(batch)
        step()
        step()
    first_s = time.perf_counter() - t0  # model build + two steps (+ compilation)
    for _ in range(max(0, sizes.warmup_steps - 2)):
        step()
    seconds = timed(step, sizes.timed_steps, device)
    mem = peak_memory_gib(device)
    eager_plain = not (checkpointing or compiled)
    flops, counted_at = model_flops(stage, batch, sizes, device, dtype, flops_cache,
                                    step if eager_plain else None)
    step_s = seconds / sizes.timed_steps
    rec = {"stage": stage, "what": "U-ViT" if stage == 1 else "DKIM adapter on the frozen U-ViT",
           "compile": backend or False, "checkpointing": checkpointing, "status": "ok",
           "batch": batch, "step_ms": 1e3 * step_s, "samples_per_s": batch / step_s,
           "flops_per_step": flops, "flops_per_sample": flops / batch,
           "achieved_tflops": flops / step_s / 1e12, "mfu": flops / step_s / 1e12 / peak_tflops,
           "peak_memory_gib": mem, "build_and_first_two_steps_s": first_s,
           "trainable_params_m": sum(p.numel() for p in step.params) / 1e6,
           "optimizer": "AdamW fused" if step.fused else "AdamW (foreach)"}
    if counted_at != batch:
        rec["flops_scaled_from_batch"] = counted_at
    step.release()
    del step
    reset_memory(device)
    return rec


# ----------------------------------------------------------------------------------- 3. sample

def build_pipeline(work: Path, comp: Components, sizes: Sizes, device: torch.device,
                   dtype: torch.dtype):
    """DiffCXRPipeline from the work folder's VAE and text folders and a fresh U-ViT of the
    preset + DKIM adapter, fitted to them as ``build_denoiser`` does."""
    from cxraug.diffusion.config import SampleConfig, TrainConfig
    from cxraug.diffusion.pipeline import DiffCXRPipeline
    from cxraug.models.adapter import DiseaseAdapter
    from cxraug.models.autoencoder import load_pretrained_vae
    from cxraug.models.uvit import PRESETS, UViT
    from cxraug.text.squeeze import ReportEncoder

    space = load_pretrained_vae(str(work / comp.vae), image_size=sizes.image_size, device=device)
    torch.manual_seed(0)
    path = str(work / comp.text_path) if comp.text_path else None
    encoder = ReportEncoder(comp.text_encoder, path, sizes.max_tokens, sizes.cond_tokens)
    encoder = encoder.to(device).freeze()
    c, h, _ = space.latent_shape
    args = dict(PRESETS[sizes.preset], in_channels=c, latent_size=h, context_dim=encoder.width,
                num_context_tokens=encoder.cond_tokens)
    den = UViT(**args).to(device)
    ada = DiseaseAdapter.from_base(den)  # its zero-initialised layers cost the same FLOPs
    sc = SampleConfig(sampler="dpm++", steps=sizes.sample_steps, guidance=2.0,
                      batch_size=sizes.sample_batch)
    pipe = DiffCXRPipeline(space, encoder, den, ada, sc, TrainConfig(), device=str(device))
    pipe.model = Bf16Denoiser(pipe.model, device, dtype)
    return pipe


def two_pass_sample(pipe, reports, seeds, labels, steps: int, guidance: float) -> np.ndarray:
    """The baseline: a plain diffusers-style loop, conditional and unconditional forward as two
    separate calls per step, DPMSolverMultistepScheduler, then the same VAE decode."""
    from diffusers import DPMSolverMultistepScheduler

    from cxraug.data.templates import paper_hint
    from cxraug.data.transforms import model_to_uint8
    from cxraug.diffusion.sampling import initial_noise

    with torch.inference_mode():
        sched = DPMSolverMultistepScheduler.from_config(
            pipe.train_scheduler.config, algorithm_type="dpmsolver++", solver_order=2)
        sched.set_timesteps(steps, device=pipe.device)
        ctx = pipe.encode(reports)
        hint = pipe.encode([paper_hint(v) for v in labels])
        b = len(reports)
        null = pipe.null.to(pipe.device).expand(b, *pipe.null.shape)
        x = initial_noise(seeds, pipe.space.latent_shape, pipe.device) * sched.init_noise_sigma
        for t in sched.timesteps:
            inp = sched.scale_model_input(x, t)
            tt = t.expand(b).to(pipe.device)
            eps_c = pipe.model(inp, tt, ctx, hint)
            eps_u = pipe.model(inp, tt, null, null)
            x = sched.step(eps_u + guidance * (eps_c - eps_u), t, x).prev_sample
        return model_to_uint8(pipe.space.decode(x))


def _flops_by_part(counter, n: int) -> dict:
    """Per-image FLOPs of the top-level modules, grouped as denoiser / text / VAE decode."""
    out = {"denoiser": 0.0, "text_encoder": 0.0, "vae_decode": 0.0}
    for name, counts in counter.get_flop_counts().items():
        if name == "Global" or "." in name:
            continue
        part = ("denoiser" if "UViT" in name or "Adapter" in name else
                "text_encoder" if "Encoder" in name and "Report" in name else "vae_decode")
        out[part] += sum(counts.values()) / n
    return out


def measure_sampling(work: Path, comp: Components, sizes: Sizes, device: torch.device,
                     dtype: torch.dtype, peak_tflops: float) -> dict:
    """images/s of the pipeline against its FLOP ceiling, and of the two-pass baseline."""
    from cxraug.data import labels as L

    reset_memory(device)
    pipe = build_pipeline(work, comp, sizes, device, dtype)
    b, steps, guidance = sizes.sample_batch, sizes.sample_steps, 2.0
    reports = [REPORTS[i % len(REPORTS)] for i in range(b)]
    labels = np.stack([L.vector(positive=["Pneumonia"] if i % 2 == 0 else ["No Finding"])
                       for i in range(b)])
    seeds = list(range(b))

    def pipeline_call():
        return pipe(reports, seeds=seeds, labels=labels, steps=steps, guidance=guidance,
                    batch_size=b)

    def baseline_call():
        return two_pass_sample(pipe, reports, seeds, labels, steps, guidance)

    out = {"image_size": sizes.image_size, "batch": b, "steps": steps, "guidance": guidance,
           "sampler": "dpm++ (DPMSolverMultistepScheduler, order 2)",
           "denoiser_precision": "bf16 autocast" if dtype == torch.bfloat16 else "fp32",
           "vae_decode_precision": "fp32", "text_encoder": comp.text_encoder}
    with flop_counter() as counter:  # one counted call, also the first warm-up
        images = pipeline_call()
    if images.shape != (b, sizes.image_size, sizes.image_size) or images.dtype != np.uint8:
        raise RuntimeError(f"pipeline returned {images.dtype} {images.shape}")
    flops_image = counter.get_total_flops() / b
    out.update(flops_per_image=flops_image, flops_per_image_by_part=_flops_by_part(counter, b),
               ceiling_images_per_s=peak_tflops * 1e12 / flops_image)
    pipeline_call()  # warm-up without the counter's dispatch hooks
    reset_memory(device)
    seconds = timed(pipeline_call, sizes.sample_repeats, device)
    ips = b * sizes.sample_repeats / seconds
    out["pipeline"] = {"images_per_s": ips, "seconds_per_batch": seconds / sizes.sample_repeats,
                       "fraction_of_flop_ceiling": ips / out["ceiling_images_per_s"],
                       "achieved_tflops": ips * flops_image / 1e12,
                       "peak_memory_gib": peak_memory_gib(device)}
    baseline_call()
    reset_memory(device)
    seconds = timed(baseline_call, sizes.sample_repeats, device)
    bps = b * sizes.sample_repeats / seconds
    out["two_pass_baseline"] = {"images_per_s": bps,
                                "seconds_per_batch": seconds / sizes.sample_repeats,
                                "peak_memory_gib": peak_memory_gib(device)}
    out["speedup_vs_two_pass"] = ips / bps
    return out


# ----------------------------------------------------------------------------------- 4. CLI

def cli_overrides(comp: Components, sizes: Sizes, real_frac: float, steps: tuple[int, int]) -> list[str]:
    """``--set`` pairs: the recipe's own values except steps, data size and the local folders."""
    sets = {"data.real_frac": real_frac, "vae.pretrained": comp.vae,
            "text.max_steps": 1 if sizes.tiny else 2, "text.batch_size": 4 if sizes.tiny else 8,
            "train.steps": steps[0], "adapter.steps": steps[1]}
    if comp.text_encoder == "biomedclip":
        sets["text.encoder_path"] = comp.text_path
    else:
        sets["text.encoder"] = comp.text_encoder
    if sizes.prompts != "mined":
        sets["data.prompts"] = sizes.prompts
    if sizes.tiny:
        sets.update({"data.image_size": sizes.image_size, "vae.image_size": sizes.image_size,
                     "text.max_tokens": sizes.max_tokens, "text.cond_tokens": sizes.cond_tokens,
                     "denoiser.preset": sizes.preset, "sample.steps": 5,
                     "sample.grid_per_prompt": 1})
    if sizes.cli_batch:
        sets.update({"train.batch_size": sizes.cli_batch, "adapter.batch_size": sizes.cli_batch})
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def run_cli(name: str, args: list[str], work: Path, timeout: float) -> dict:
    """One ``cxraug`` command in a subprocess (cwd: the work folder): wall time, success."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("HF_HUB_OFFLINE", "1")
    cmd = [sys.executable, "-m", "cxraug.cli.main", *args]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                              timeout=max(1.0, timeout), check=False)
        rc, tail = proc.returncode, (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
    except subprocess.TimeoutExpired:
        rc, tail = None, [f"timed out after {timeout:.0f} s"]
    rec = {"step": name, "command": scrub("cxraug " + " ".join(args)), "ok": rc == 0,
           "returncode": rc, "wall_s": time.perf_counter() - t0}
    if rc != 0:
        rec["error_tail"] = [scrub(line)[:300] for line in tail]
    return rec


def train_loop_speed(run: Path) -> dict:
    """The samples/s that ``cxraug.diffusion.denoiser_training`` itself logged (last line per stage; the
    window includes the first steps' warm-up)."""
    out = {}
    for stage, name in ((1, "metrics.jsonl"), (2, "metrics_stage2.jsonl")):
        p = run / name
        if p.is_file() and p.read_text().strip():
            last = json.loads(p.read_text().strip().splitlines()[-1])
            out[f"stage{stage}"] = {"step": last["step"], "samples_per_s": last["samples_per_s"]}
    return out


def cli_real_frac(data: str, target: int) -> float:
    """The real fraction that leaves about ``target`` training images (train split ~ 80%)."""
    from cxraug.data.adapters import load_dataset, resolve_data

    n = len(load_dataset(resolve_data(data), "auto"))
    return float(min(1.0, round(target / max(1.0, 0.8 * n), 4)))


def measure_cli(work: Path, comp: Components, sizes: Sizes, data: str, budget: Budget) -> dict:
    """train (vae, text, stage 1, stage 2) -> the same with more steps (resume) -> synth."""
    real_frac = cli_real_frac(data, sizes.cli_images)
    out = {"recipe": "recipes/diffcxr-paper.yaml", "data": scrub(data), "real_frac": real_frac,
           "image_size": sizes.image_size, "prompts": sizes.prompts, "vae": comp.vae_desc,
           "text_encoder": comp.text_encoder, "text_encoder_desc": comp.text_desc, "steps": []}
    train = ["train", "--stage", "2", "--recipe", str(RECIPE), "--data", data, "--out", "run"]
    synth = ["synth", "--model", "./run", "--labels", "pneumonia", "--n", str(sizes.synth_n),
             "--out", "cohort", "--gates", "none", "--batch-size", str(sizes.synth_n),
             "--prompts", sizes.prompts] + (["--steps", "5"] if sizes.tiny else [])
    plan = [("train", train + cli_overrides(comp, sizes, real_frac, sizes.cli_steps)),
            ("resume", train + cli_overrides(comp, sizes, real_frac, sizes.cli_resume_steps)),
            ("synth", synth)]
    for (name, args), cap in zip(plan, sizes.cli_caps_s):
        if not budget.allows(f"cli.{name}", 15):
            out["steps"].append({"step": name, "ok": False, "skipped": "time budget"})
            continue
        rec = run_cli(name, args, work, min(cap, budget.left() - 5))
        if name != "synth":
            rec["train_loop_speed"] = train_loop_speed(work / "run")
        elif rec["ok"]:
            rec["images"] = len(list((work / "cohort" / "images").glob("*.png")))
        out["steps"].append(rec)
    out["all_ok"] = all(s["ok"] for s in out["steps"])
    return out


# ----------------------------------------------------------------------------------- report

def cpu_name() -> str:
    from cxraug.core.precision import cpu_info

    info = cpu_info()
    return f"{info['model']} ({', '.join(info['flags']) or 'no AVX2'})"


def environment(device: torch.device, dtype: torch.dtype) -> dict:
    import diffusers
    import transformers

    import cxraug

    env = {"device": {"type": device.type, "name": cpu_name(), "cpu_threads": torch.get_num_threads()},
           "cpu": cpu_name(),
           "versions": {"python": platform.python_version(), "torch": torch.__version__,
                        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                        "diffusers": diffusers.__version__, "transformers": transformers.__version__,
                        "cxraug": cxraug.__version__},
           "matmul_dtype": str(dtype).replace("torch.", ""),
           "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                    "cudnn": torch.backends.cudnn.allow_tf32}}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env["device"].update(name=p.name, capability=f"{p.major}.{p.minor}",
                             memory_gib=round(p.total_memory / 2**30, 1),
                             multiprocessors=p.multi_processor_count)
    with contextlib.suppress(ImportError):
        import open_clip

        env["versions"]["open_clip"] = open_clip.__version__
    return env


def print_table(res: dict) -> None:
    def f(v, spec=".1f"):
        return "-" if v is None else format(v, spec)

    env = res["environment"]
    print(f"\n{env['device']['name']} ({res['mode']}), torch {env['versions']['torch']}, "
          f"wall {res['wall_s']:.0f} s of {res['budget_s']:.0f} s")
    pm = res.get("peak_matmul") or {}
    print(f"peak matmul {pm.get('n')}^3 {pm.get('dtype')}: {f(pm.get('tflops'))} TFLOP/s")
    print(f"{'train step':28s} {'batch':>5s} {'samples/s':>10s} {'MFU':>6s} {'mem GiB':>8s}")
    for v in (res.get("train") or {}).get("variants", []):
        name = (f"stage {v['stage']} {'compiled' if v['compile'] else 'eager'}"
                f"{' +ckpt' if v['checkpointing'] else ''}")
        if v["status"] != "ok":
            print(f"{name:28s} {v['status']}: {v.get('error', '')[:70]}")
            continue
        print(f"{name:28s} {v['batch']:5d} {v['samples_per_s']:10.1f} {v['mfu']:6.1%} "
              f"{f(v['peak_memory_gib']):>8s}")
    s = res.get("sample") or {}
    if s.get("pipeline"):
        p = s["pipeline"]
        print(f"sampling {s['image_size']} px x{s['batch']}, {s['steps']} steps: pipeline "
              f"{p['images_per_s']:.2f} img/s ({p['fraction_of_flop_ceiling']:.1%} of the "
              f"{s['ceiling_images_per_s']:.1f} img/s FLOP ceiling); two-pass "
              f"{s['two_pass_baseline']['images_per_s']:.2f} img/s; ratio {s['speedup_vs_two_pass']:.2f}")
    for st in (res.get("cli") or {}).get("steps", []):
        msg = "" if st["ok"] else "  " + (st.get("error_tail") or [st.get("skipped", "")])[-1][:90]
        print(f"cli {st['step']:7s} {'ok' if st['ok'] else 'FAILED'} {f(st.get('wall_s'))} s{msg}")
    for e in res.get("errors", []):
        print(f"error in {e['part']}: {e['error'][:100]}")
    for sk in res.get("skipped", []):
        print(f"skipped {sk['part']}: {sk['reason']}")


# ----------------------------------------------------------------------------------- main

def guarded(res: dict, part: str, fn, *args):
    """Run one part; a failure is recorded (first line) instead of ending the script."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001
        res.setdefault("errors", []).append({"part": part, "error": first_line(e)})
        return None


def train_variant(res: dict, stage: int, checkpointing: bool, compiled: bool, sizes: Sizes,
                  device: torch.device, dtype: torch.dtype, budget: Budget, skip: set[str],
                  cache: dict) -> None:
    """One row of ``train.variants`` (or of ``skipped``). ``cache`` holds FLOP counts per
    (stage, batch) and, per (stage, checkpointing), the eager batch the compiled run reuses."""
    name = f"train.stage{stage}{'.compiled' if compiled else ''}{'.ckpt' if checkpointing else ''}"
    if "train" in skip or (compiled and "compile" in skip):
        budget.skipped.append({"part": name, "reason": "--skip"})
        return
    if not budget.allows(name, (15 if sizes.tiny else 120) if compiled else (5 if sizes.tiny else 25)):
        return
    try:
        v = measure_train(stage, checkpointing, compiled, sizes, device, dtype,
                          res["peak_matmul"]["tflops"], cache.setdefault("flops", {}),
                          batch=cache.get((stage, checkpointing)) if compiled else None)
        cache.setdefault((stage, checkpointing), v["batch"])
    except Exception as e:  # noqa: BLE001
        v = {"stage": stage, "compile": sizes.compile_backend if compiled else False,
             "checkpointing": checkpointing, "status": "failed", "error": first_line(e)}
        reset_memory(device)
    res["train"]["variants"].append(v)


def run_parts(res: dict, sizes: Sizes, device: torch.device, dtype: torch.dtype, budget: Budget,
              work: Path, data: str, skip: set[str], save) -> None:
    """The measurements in order of importance; compiled training variants come last."""
    @contextlib.contextmanager
    def part(name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            res["part_wall_s"][name] = round(time.perf_counter() - t0, 2)
            save()

    res["part_wall_s"] = {}
    # 1. The device's peak: the yardstick of every utilisation figure.
    with part("peak_matmul"):
        res["peak_matmul"] = measure_peak_matmul(device, dtype, sizes)
    peak = res["peak_matmul"]["tflops"]
    # 2. Training steps, eager, without and with gradient checkpointing.
    res["train"] = {
        "preset": sizes.preset,
        "step": "forward under bf16 autocast (fp32 on the CPU), fp32 MSE loss on epsilon, "
                "backward, clip_grad_norm 1.0, AdamW (fused on CUDA; lr 2e-4, wd 0.03, betas "
                "0.9/0.9), EMA update (cxraug.diffusion.denoiser_training.ema_model); inputs pre-drawn on "
                "the device",
        "flops": "FlopCounterMode over one eager forward+backward without checkpointing at the "
                 "measured batch (model FLOPs); mfu = flops_per_step / step time / peak_matmul",
        "variants": []}
    cache: dict = {}
    with part("train_eager"):
        for stage, ckpt in ((1, False), (2, False), (1, True), (2, True)):
            train_variant(res, stage, ckpt, False, sizes, device, dtype, budget, skip, cache)
    # 3. + 4. Sampling and the CLI path need the SD-VAE- and BiomedCLIP-shaped folders.
    comps = None
    if not {"sample", "cli"} <= skip:
        with part("components"):
            comps = guarded(res, "components", build_components, work, sizes)
            res["components"] = asdict(comps) if comps else None
    if comps and "sample" not in skip and budget.allows("sample", 10 if sizes.tiny else 60):
        with part("sample"):
            res["sample"] = guarded(res, "sample", measure_sampling, work, comps, sizes, device,
                                    dtype, peak)
    if comps and "cli" not in skip and budget.allows("cli", 20 if sizes.tiny else 150):
        with part("cli"):
            res["cli"] = guarded(res, "cli", measure_cli, work, comps, sizes, data, budget)
    # 2b. torch.compile (optional: each compilation costs about a minute on a GPU).
    with part("train_compiled"):
        for stage, ckpt in sizes.compiled:
            train_variant(res, stage, ckpt, True, sizes, device, dtype, budget, skip, cache)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny configs on the CPU, in seconds")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu.json",
                    help="the JSON (default benchmarks/results/gpu.json)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole run (default 480; --tiny 600)")
    ap.add_argument("--data", default="sample:kermany",
                    help="data of the CLI run (default: the embedded Kermany sample)")
    ap.add_argument("--prompts", choices=("mined", "paper"), default=None,
                    help="prompt text of the CLI run (default: the recipe's mined bank, built from "
                         "torchxrayvision's IU reports; --tiny: the paper's fixed templates)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="folder for the built components and the CLI run (default: temporary)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    ap.add_argument("--skip", default="", help="parts to skip, comma-separated: train, compile, "
                                               "sample, cli")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() and not args.tiny:
        print("benchmarks/gpu.py needs a CUDA GPU; without one, run it with --tiny "
              "(the same code paths, tiny configs on the CPU)", file=sys.stderr)
        return 2

    sizes = TINY if args.tiny else GPU
    if args.prompts:
        sizes = replace(sizes, prompts=args.prompts)
    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    budget = Budget(args.budget or sizes.budget_s, T_IMPORT if __name__ == "__main__" else None)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cxraug-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    _SCRUB[:] = [(str(work.resolve()), "<work>"), (str(work), "<work>"), (str(REPO), "<repo>"),
                 (str(Path.home()), "~")]
    res: dict = {"schema": 1, "mode": "tiny (CPU)" if sizes.tiny else "cuda",
                 "budget_s": budget.total, "sizes": asdict(sizes),
                 "environment": environment(device, dtype)}

    def save() -> None:
        res["skipped"] = budget.skipped
        res["wall_s"] = time.perf_counter() - budget.t0
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2, default=str) + "\n")

    try:
        run_parts(res, sizes, device, dtype, budget, work, args.data, skip, save)
    finally:
        save()
        if args.workdir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_table(res)
    print(f"\nwrote {scrub(str(args.out.resolve()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
