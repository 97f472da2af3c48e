"""Parts 1 and 2 of the GPU benchmark: the device's matmul peak, and one training step of the
paper-preset U-ViT (stage 1) and of the DKIM adapter on the frozen U-ViT (stage 2) as samples/s,
model FLOPs, MFU and peak memory."""

from __future__ import annotations

import time

import torch
from gpu_common import (
    Sizes,
    autocast,
    flop_counter,
    is_oom,
    peak_memory_gib,
    reset_memory,
    sync,
    timed,
)


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


def build_train_model(stage: int, preset: str, checkpointing: bool, device: torch.device):
    """``(network, trainable)``. Stage 1: the U-ViT. Stage 2: a DKIM adapter (copy of the U-ViT's
    input side) on the frozen U-ViT, composed as ``cxraug.diffusion.denoiser_training`` does."""
    from cxraug.models.adapter import ControlledUViT, DiseaseAdapter
    from cxraug.models.uvit import PRESETS, UViT

    torch.manual_seed(0)
    base = UViT(**PRESETS[preset], gradient_checkpointing=checkpointing).to(device)
    if stage == 1:
        return base, base
    adapter = DiseaseAdapter.from_base(base)
    return ControlledUViT(base, adapter).to(device), adapter


class TrainStep:
    """One optimisation step of ``cxraug.diffusion.denoiser_training`` on a fixed batch of clean
    latents and conditions: the loop's loss object (:class:`~cxraug.diffusion.loss.DiffusionLoss`
    from the default ``TrainConfig``: timestep, noise and condition-dropout draws from a CPU
    generator, noising, MSE on the epsilon target) under bf16 autocast, backward, grad-norm clip,
    AdamW, EMA update."""

    def __init__(self, stage: int, preset: str, checkpointing: bool, batch: int,
                 device: torch.device, dtype: torch.dtype, compile_backend: str | None = None):
        from cxraug.core.training import ema_model
        from cxraug.diffusion.config import TrainConfig
        from cxraug.diffusion.denoiser import Condition, Denoiser
        from cxraug.diffusion.loss import DiffusionLoss

        self.stage, self.batch, self.device, self.dtype = stage, batch, device, dtype
        self.net, self.trainable = build_train_model(stage, preset, checkpointing, device)
        self.net.train()
        self.params = [p for p in self.trainable.parameters() if p.requires_grad]
        tc = TrainConfig()
        self.fused = device.type == "cuda"
        # recipes/diffcxr-paper.yaml: AdamW 2e-4, wd 0.03, betas (0.9, 0.9), EMA 0.9999
        self.opt = torch.optim.AdamW(self.params, lr=2e-4, weight_decay=0.03, betas=(0.9, 0.9),
                                     **({"fused": True} if self.fused else {}))
        self.ema = ema_model(self.trainable, 0.9999).to(device)
        self.compiled = compile_backend is not None
        forward = torch.compile(self.net, backend=compile_backend) if self.compiled else self.net
        self.denoiser = Denoiser(forward, uses_hint=stage == 2)  # net(x_t, t, cond), as in training
        self.eager = Denoiser(self.net, uses_hint=stage == 2)
        # Clean latents and conditions drawn once, on the device: the step measures the loss's
        # own draws and noising, the model and the optimiser, not a data pipeline.
        args = self.net.args if stage == 1 else self.net.base.args
        c, s = args["in_channels"], args["latent_size"]
        k, d = args["num_context_tokens"], args["context_dim"]
        g = torch.Generator(device=device).manual_seed(0)
        self.z = torch.randn(batch, c, s, s, device=device, generator=g)
        null = torch.randn(k, d, device=device, generator=g)
        context = torch.randn(batch, k, d, device=device, generator=g)
        hint = torch.randn(batch, k, d, device=device, generator=g) if stage == 2 else None
        self.cond = Condition(context, hint)
        self.loss_fn = DiffusionLoss.from_config(tc, Condition(null, null))
        self.generator = torch.Generator().manual_seed(0)  # continued step by step, as in training
        self.grad_clip = tc.grad_clip

    def loss(self, denoiser=None) -> torch.Tensor:
        return self.loss_fn(denoiser or self.denoiser, self.z, self.cond, self.generator,
                            autocast=lambda: autocast(self.device, self.dtype)).mean()

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
            self.loss(self.eager).backward()
        self.opt.zero_grad(set_to_none=True)
        return int(counter.get_total_flops())

    def release(self) -> None:
        for name in ("denoiser", "eager", "net", "trainable", "opt", "ema", "params", "loss_fn"):
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
