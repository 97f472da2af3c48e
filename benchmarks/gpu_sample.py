"""Part 3 of the GPU benchmark: images/s of ``DiffCXRPipeline`` against its FLOP ceiling and
against a plain two-pass diffusers-style sampling loop on the same models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from gpu_common import (
    REPORTS,
    Bf16Denoiser,
    Sizes,
    flop_counter,
    peak_memory_gib,
    reset_memory,
    timed,
)
from gpu_components import Components


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
