"""What ``benchmarks/gpu.py`` shares between its parts: the sizes of a GPU run and of ``--tiny``,
the time budget, timing and memory helpers, bf16 autocast, and the scrubbing of absolute paths
from the results."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "diffcxr-paper.yaml"
REPORTS = ["Right lower lobe consolidation, consistent with pneumonia.",
           "Heart size is normal. Lungs are clear. No pleural effusion or pneumothorax.",
           "Patchy opacity in the left lung base. Possible early pneumonia.",
           "No acute cardiopulmonary process."]


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
