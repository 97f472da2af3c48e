"""Denoiser training, stage 1 (U-ViT) and stage 2 (DKIM adapter on the frozen stage-1 model).

One loop serves both stages: the denoiser is called as ``net(x_t, t, cond)``
(:class:`~cxraug.diffusion.denoiser.Denoiser`) and the loss is one object
(:class:`~cxraug.diffusion.loss.DiffusionLoss`). It is exactly resumable: the data order is a
seeded permutation per epoch and every step draws its latent samples, timesteps, noise and
condition dropout from a generator seeded by ``(seed, stage, step, process)``, so a run killed
after a checkpoint and resumed repeats the uninterrupted run's steps (and loss curve). Multi-GPU /
multi-node runs go through ``accelerate launch``; each process takes its slice of every global batch.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from cxraug.core.errors import CxraugError
from cxraug.core.precision import accelerate_precision
from cxraug.core.progress import MetricsLog, job_progress
from cxraug.core.runs import RunDir
from cxraug.core.seeds import stable_seed
from cxraug.core.training import BatchOrder, TrainState, ema_model
from cxraug.data import labels as L
from cxraug.diffusion.config import DiffCXRConfig, TrainConfig
from cxraug.diffusion.denoiser import Condition, Denoiser
from cxraug.diffusion.init_from import init_weights
from cxraug.diffusion.loss import DiffusionLoss
from cxraug.diffusion.pipeline import DiffCXRPipeline, check_run_files, write_grid
from cxraug.diffusion.prepare import TrainingSet, build_training_set
from cxraug.diffusion.prompts import validation_prompts
from cxraug.models.adapter import DiseaseAdapter
from cxraug.models.autoencoder import LatentSpace
from cxraug.models.uvit import UViT, build_denoiser
from cxraug.text.squeeze import ReportEncoder

# Settings that define the noise process; stage 2 always takes them from stage 1 (``train``).
NOISE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type",
              "zero_terminal_snr", "noise_offset")


def lr_scheduler(opt: torch.optim.Optimizer, tcfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps``, then ``tcfg.lr_schedule``: constant, or diffusers'
    cosine / linear decay to 0 at ``tcfg.steps``."""
    if tcfg.lr_schedule == "constant":  # reaches the full rate at the warm-up's last step, not after it
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: min(1.0, (step + 1) / max(1, tcfg.warmup_steps)))
    from diffusers.optimization import get_scheduler

    return get_scheduler(tcfg.lr_schedule, opt, num_warmup_steps=tcfg.warmup_steps,
                         num_training_steps=tcfg.steps)


# ------------------------------------------------------------------------------ the loop

def train_denoiser(net: Denoiser, trainable: torch.nn.Module, data: TrainingSet,
                   latent_space, tcfg: TrainConfig, run: RunDir, stage: int,
                   on_sample=None, progress: bool = True, max_steps: int | None = None) -> AveragedModel:
    """Train ``trainable`` (the U-ViT in stage 1, the adapter in stage 2) inside ``net``.

    ``net(x_t, t, cond)`` predicts the target of ``tcfg.prediction_type``. ``on_sample(step,
    ema_module)`` writes a sample grid. ``max_steps`` stops early (to simulate an interruption in
    tests) without changing the schedule. Returns the EMA of ``trainable``.
    """
    from accelerate import Accelerator

    # 1. Setup: accelerator, loss, optimiser, EMA, metrics log; resume from the latest checkpoint.
    acc = Accelerator(mixed_precision=accelerate_precision(tcfg.precision), cpu=not torch.cuda.is_available())
    rank, world = acc.process_index, acc.num_processes
    null = data.null.to(acc.device)
    loss_fn = DiffusionLoss.from_config(tcfg, Condition(null, null))
    params = [p for p in trainable.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay, betas=tuple(tcfg.betas))
    lr_sched = lr_scheduler(opt, tcfg)
    ema = ema_model(trainable, tcfg.ema_decay)
    ckpt_dir, log = run.checkpoints(stage), MetricsLog(run.metrics(stage), acc.is_main_process)
    state = TrainState(trainable, opt, ema, lr_sched)
    start = state.resume(ckpt_dir, announce=acc.is_main_process)
    log.resume(start)  # a resumed run rewrites the curve past its checkpoint
    net, opt = acc.prepare(net, opt)
    state.opt = opt  # saved through accelerate's wrapper
    ema.to(acc.device)
    if tcfg.batch_size % world:
        raise ValueError(f"train.batch_size {tcfg.batch_size} must be divisible by {world} processes")
    per_proc = tcfg.batch_size // world
    order = BatchOrder(len(data), tcfg.seed)
    bank = Condition(data.cond_bank.to(acc.device), data.hint_bank.to(acc.device))
    end = tcfg.steps if max_steps is None else min(tcfg.steps, max_steps)
    net.train()
    t0, window = time.perf_counter(), []
    with job_progress(f"stage {stage}", "loss {task.fields[loss]}  {task.fields[speed]}",
                      enabled=progress and acc.is_main_process) as bar:
        task = bar.add_task("train", total=tcfg.steps, completed=start, loss="-", speed="")
        for step in range(start, end):
            # 2. Batch: this process's slice of the global batch, in the seeded order: latents
            #    drawn from their cached posteriors, report context and DKIM hint.
            rows = order.rows(step * tcfg.batch_size + rank * per_proc, per_proc)
            gen = torch.Generator().manual_seed(stable_seed(tcfg.seed, stage, step, rank))
            z = latent_space.sample(data.moments[rows], gen).to(acc.device)
            cond = Condition(bank.context[torch.as_tensor(data.cond_index[rows], device=acc.device)],
                             bank.hint[torch.as_tensor(data.hint_index[rows], device=acc.device)])
            # 3. Loss: timesteps, noise, condition dropout, target and weighting, drawn from the
            #    same generator (DiffusionLoss).
            loss = loss_fn(net, z, cond, gen, autocast=acc.autocast).mean()
            # 4. Backward, clip, update.
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            if tcfg.grad_clip > 0:
                acc.clip_grad_norm_(params, tcfg.grad_clip)
            opt.step()
            lr_sched.step()
            # 5. EMA of the trainable weights.
            ema.update_parameters(trainable)
            # 6. Maintenance: metrics, progress, sample grids, checkpoints.
            done = step + 1
            window.append(acc.gather(loss.detach()[None]).mean().item())
            if done % tcfg.log_every == 0 or done == end:
                dt = time.perf_counter() - t0
                rec = log.write(done, loss=float(np.mean(window)), lr=lr_sched.get_last_lr()[0],
                                steps_per_s=len(window) / dt,
                                samples_per_s=len(window) * tcfg.batch_size / dt)
                bar.update(task, loss=f"{rec['loss']:.4f}",
                           speed=f"{rec['steps_per_s']:.2f} it/s  lr {rec['lr']:.2e}")
                t0, window = time.perf_counter(), []
            bar.update(task, completed=done)
            if acc.is_main_process and on_sample and tcfg.sample_every and done % tcfg.sample_every == 0:
                on_sample(done, ema.module)
            if acc.is_main_process and (done % tcfg.checkpoint_every == 0 or done == tcfg.steps):
                state.save(ckpt_dir, done, tcfg.keep_checkpoints)
            acc.wait_for_everyone()
    return ema


def run_stage(cfg: DiffCXRConfig, run: RunDir, stage: int, progress: bool = True,
              max_steps: int | None = None, init_src: Path | None = None) -> Path:
    """Train one stage end to end and export its EMA weights as a component folder
    (``init_src``: the folder ``train.init_from`` resolved to, whose U-ViT stage 1 starts from)."""
    # 1. Frozen parts: latent space and report encoder; cached training inputs.
    from accelerate import PartialState


    state = PartialState()
    # a damaged frozen part is named in one line; a damaged stage-1 export is rewritten from
    # its checkpoint by rerunning stage 1, so it is checked only where stage 2 loads it
    check_run_files(run, ("vae", "text") if stage == 1 else ("vae", "text", "denoiser"))
    space = LatentSpace.load(run.vae)
    encoder = ReportEncoder.from_pretrained(run.text)
    with state.main_process_first():  # caches are written once, then read by the others
        data = build_training_set(cfg, run, space, encoder, progress and state.is_main_process)
    # 2. The model of this stage.
    torch.manual_seed(stable_seed(cfg.train.seed, "init", stage))
    init = None
    if stage == 1:
        base = trainable = build_denoiser(cfg.denoiser, space, encoder)
        net = Denoiser.compose(base)
        tcfg = cfg.train
        if tcfg.init_from:  # not loaded when a checkpoint of this run will be resumed
            if init_src is None:
                raise ValueError("train.init_from is set: pass its resolved folder as init_src")
            init = init_weights(base, init_src, tcfg.init_from,
                                load=not any(run.checkpoints(stage).glob("step_*")))
    else:
        if not (run.denoiser / "config.json").is_file():

            raise CxraugError(f"{run.denoiser}: no stage-1 denoiser; train stage 1 first "
                              "(cxraug train --stage 1) or pass --from a stage-1 run")
        base = UViT.from_pretrained(run.denoiser)  # really loaded, then frozen by the wrapper
        trainable = DiseaseAdapter.from_base(base)
        net = Denoiser.compose(base, trainable)
        # the adapter learns the frozen stage-1 model's noise process: same schedule and target
        tcfg = dataclasses.replace(cfg.adapter, **{k: getattr(cfg.train, k) for k in NOISE_KEYS})
    val = validation_prompts(data.dataset, cfg.data.prompts)

    def on_sample(step: int, ema_module) -> None:
        den, ada = (ema_module, None) if stage == 1 else (base, ema_module)
        # sample where training runs: the frozen parts follow the EMA weights (a GPU run's EMA
        # lives on the GPU; the caches above were built with them on the CPU)
        device = next(ema_module.parameters()).device
        pipe = DiffCXRPipeline(space.to(device), encoder.to(device), den.to(device), ada,
                               sample_cfg=cfg.sample, train_cfg=cfg.train, device=str(device))
        write_grid(pipe, val, run.samples / f"stage{stage}_step_{step:08d}.png", cfg.sample)

    # 3. Train, then export the EMA weights as this stage's component.
    ema = train_denoiser(net, trainable, data, space, tcfg, run, stage, on_sample, progress, max_steps)
    if (max_steps is not None and max_steps < tcfg.steps) or not state.is_main_process:
        return run.root
    meta = {"stage": stage, "steps": tcfg.steps, "trained_on": data.dataset.name,
            "n_train_images": len(data), "latent_shape": list(space.latent_shape),
            "image_size": space.image_size, "label_order": list(L.OBSERVATIONS)}
    if stage == 2:
        meta["base_steps"] = base.meta.get("steps")  # the stage-1 model this adapter fits
    if init:
        meta["init_from"] = init
    target = run.denoiser if stage == 1 else run.adapter
    ema.module.save_pretrained(target, meta)
    on_sample(tcfg.steps, ema.module)
    return target
