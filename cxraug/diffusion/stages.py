"""A Diff-CXR run, stage by stage: latent space (-> decoder tuning) -> report encoder -> U-ViT ->
DKIM adapter.

Each stage writes its component folder into the run and is skipped when that folder exists, so
``cxraug train --stage 1`` on a fresh run folder trains (or loads) the VAE and the report
encoder first, and rerunning an interrupted command resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from cxraug.core import config as C
from cxraug.core.artifacts import check_component
from cxraug.core.errors import CxraugError
from cxraug.core.runs import RunDir, timed_stage
from cxraug.core.training import resumable_checkpoint
from cxraug.data.cache import cached_images
from cxraug.diffusion.config import DecoderTuneConfig, DiffCXRConfig
from cxraug.diffusion.decoder_tune import tune_decoder
from cxraug.diffusion.denoiser_training import run_stage
from cxraug.diffusion.init_from import adopt_init, init_source
from cxraug.diffusion.prepare import training_dataset, write_intensity_map, write_signal_leak
from cxraug.diffusion.prompts import prompts_for
from cxraug.diffusion.run_card import decoder_tuned_steps, write_model_card
from cxraug.models.autoencoder import META_NAME, LatentSpace, load_pretrained_vae
from cxraug.models.perceptual import classifier_folder
from cxraug.models.vae_train import train_vae
from cxraug.text.squeeze import train_text

STAGES = ("vae", "decoder", "text", "1", "2")
#: Settings a resumed run may change: more steps continue the same (constant after warm-up)
#: schedule from the last checkpoint; sampling and bookkeeping settings do not affect training.
EXTENDABLE = tuple(f"{section}.{key}" for section in ("train", "adapter")
                   for key in ("steps", "sample_every", "log_every", "checkpoint_every",
                               "keep_checkpoints"))
#: Other ``adapter.*`` settings may change too: the frozen stage 1 stays, the adapter restarts.
#: ``decoder.*`` may change as well: decoder tuning keeps the latents, so nothing else retrains;
#: once a decoder is tuned, only these continue it (other settings are refused).
DECODER_EXTENDABLE = ("steps", "log_every", "checkpoint_every", "keep_checkpoints")


def _changed_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _changed_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def open_run(cfg: DiffCXRConfig, out: Path, overwrite: bool = False, main: bool = True) -> RunDir:
    """Create (or reopen, for resuming) a run folder; the resolved config is written first.

    Every refusal comes before anything is written: ``out`` under a file, a non-empty folder that
    is not a run, another config, fewer steps than already trained, or more steps with no intact
    checkpoint to continue from. Reopening may change more steps, sampling settings, and
    adapter settings: changed ``adapter.*`` training settings discard the adapter (``main``
    process only) so stage 2 retrains on the same frozen stage 1.
    """
    run = RunDir(out)
    _check_out(run)
    if main:
        finish_decoder_swap(run)
    saved = run.root / "config.yaml"
    if saved.is_file() and not overwrite:
        changed = [k for k in _changed_keys(C.to_dict(C.load(DiffCXRConfig, saved)), C.to_dict(cfg))
                   if k not in EXTENDABLE and not k.startswith(("sample.", "decoder."))]
        fixed = [k for k in changed if not k.startswith("adapter.")]
        if fixed:
            raise CxraugError(f"{saved}: this run folder was started with another config ({fixed[0]} "
                              "differs); resume with the same recipe/--set, or pass --overwrite to "
                              "replace it, or another --out")
        _check_steps(run, cfg, adapter_restarts=bool(changed))
        if not cfg.train.init_from:  # else the latent space and its decoder are the source's
            check_decoder(cfg, run)
        if main and _stale(run, "1", cfg):
            _check_resumable(run, cfg)
        if changed and main:
            _discard_adapter(run)
    elif saved.is_file() and overwrite:
        import shutil

        shutil.rmtree(run.root)
    run.root.mkdir(parents=True, exist_ok=True)
    C.save(cfg, run.root)
    return run


#: What a folder may hold before its run starts: a splits file fixes the run's splits.
PRESEEDED = ("splits.csv",)


def _check_out(run: RunDir) -> None:
    """``--out`` must be a run folder, an empty or new folder, and not below a file."""
    for p in (run.root, *run.root.parents):
        if p.exists():
            if not p.is_dir():
                raise CxraugError(f"{run.root}: {p} is a file, not a folder; pass an --out folder "
                                  "path (nothing was written)")
            break
    if run.root.is_dir() and not (run.root / "config.yaml").is_file():
        foreign = sorted(p.name for p in run.root.iterdir() if p.name not in PRESEEDED)
        if foreign:
            raise CxraugError(f"{run.root}: folder is not empty and is not a cxraug run (no "
                              f"config.yaml; holds {foreign[0]}); pass a new or empty --out "
                              "(nothing was written)")


def _trained_steps(run: RunDir, stage: int) -> int:
    """Steps this run has trained in ``stage``: its export or its newest checkpoint, if more."""
    steps = [_meta(run.denoiser if stage == 1 else run.adapter).get("steps") or 0]
    steps += [int(p.name[5:]) for p in run.checkpoints(stage).glob("step_*")
              if p.name[5:].isdigit()]
    return max(steps)


def _check_steps(run: RunDir, cfg: DiffCXRConfig, adapter_restarts: bool) -> None:
    """Fewer steps than trained would keep the longer run's weights under the shorter label."""
    done = _trained_steps(run, 1)
    checks = [("train.steps", cfg.train.steps, done, "stage-1")]
    if not adapter_restarts and cfg.train.steps <= done:  # else the adapter retrains anyway
        checks.append(("adapter.steps", cfg.adapter.steps, _trained_steps(run, 2), "adapter"))
    for key, asked, has, what in checks:
        if asked < has:
            raise CxraugError(f"{run.root / 'config.yaml'}: {key}={asked} is fewer than the {has} "
                              f"{what} steps this run has trained; a shorter run needs a new --out "
                              "(this run is unchanged)")


def _check_resumable(run: RunDir, cfg: DiffCXRConfig) -> None:
    """More stage-1 steps continue from a checkpoint: one must be intact before anything changes."""

    if resumable_checkpoint(run.checkpoints(1), announce=False) is None:
        raise CxraugError(f"{run.checkpoints(1)}: no checkpoint to continue the "
                          f"{_meta(run.denoiser).get('steps')}-step denoiser to train.steps="
                          f"{cfg.train.steps}; train the longer run into a new --out (this run is "
                          "unchanged)")


def train_images(cfg: DiffCXRConfig, run: RunDir, progress: bool):

    train = training_dataset(cfg, run)
    images, train, skipped = cached_images(train, cfg.data.image_size, skip_bad=cfg.data.skip_bad,
                                           progress=progress)
    return images, train


def stage_vae(cfg: DiffCXRConfig, run: RunDir, progress: bool = True) -> Path:
    """Load the pretrained VAE (``vae.pretrained``) or train a small single-channel one."""

    if cfg.vae.pretrained:
        space = load_pretrained_vae(cfg.vae.pretrained, cfg.vae.subfolder or None, cfg.data.image_size)
        space.save(run.vae, {"pretrained": cfg.vae.pretrained})
    else:
        images, _ = train_images(cfg, run, progress)
        train_vae(images, cfg.vae, run.vae, progress=progress, checkpoints=run.checkpoints("vae"))
        _drop_checkpoints(run, "vae")
    return run.vae


def _drop_checkpoints(run: RunDir, stage: str) -> None:
    """A frozen component (VAE, report encoder) is never trained on once it is saved: its
    checkpoints only served a resume after a kill."""
    import shutil

    shutil.rmtree(run.checkpoints(stage), ignore_errors=True)


def check_decoder(cfg: DiffCXRConfig, run: RunDir) -> int:
    """Steps the run's decoder is tuned for, after refusing what cannot continue it: fewer steps
    (0 included: the run's record would lose the tuning it has), other settings on a tuned decoder
    (they would be silently ignored or mixed into a resume), or more steps with no checkpoint to
    continue from (the tuning would restart from step 0 on the tuned decoder)."""
    import json
    from dataclasses import asdict

    done = decoder_tuned_steps(run)
    if done > cfg.decoder.steps:
        raise CxraugError(f"{run.vae}: its decoder was tuned for {done} steps, more than "
                          f"decoder.steps={cfg.decoder.steps}; keep --set decoder.steps={done} (as "
                          "in the run's config.yaml), or tune less in a new --out (this run is "
                          "unchanged)")
    if done:  # only more steps continue a finished tuning (the untuned decoder is gone)
        recorded = json.loads((run.vae / META_NAME).read_text())["decoder_tune"]
        defaults = asdict(DecoderTuneConfig())  # settings added since a run was tuned had these
        other = [k for k, v in asdict(cfg.decoder).items()
                 if k not in DECODER_EXTENDABLE and recorded.get(k, defaults[k]) != v]
        if other:
            raise CxraugError(f"{run.vae}: its decoder was tuned with decoder.{other[0]}="
                              f"{recorded.get(other[0], defaults[other[0]])!r}, not {getattr(cfg.decoder, other[0])!r}; "
                              "only decoder.steps may grow on a tuned run; tune with other settings "
                              "from the VAE stage in a new --out (this run is unchanged)")
        more = cfg.decoder.steps > done
        if more and resumable_checkpoint(run.checkpoints("decoder"), announce=False) is None:
            raise CxraugError(f"{run.checkpoints('decoder')}: no checkpoint to continue the {done}-step "
                              f"decoder tuning to decoder.steps={cfg.decoder.steps}; tune longer from "
                              "the VAE stage in a new --out (this run is unchanged)")
    return done


def finish_decoder_swap(run: RunDir) -> None:
    """Complete a tuned decoder's swap into ``vae/`` that was interrupted between its renames
    (see :func:`stage_decoder`): the tuned folder was fully written before the first one."""
    import shutil

    tmp, old = run.root / ".vae-tuned", run.root / ".vae-untuned"
    if not run.vae.exists() and (tmp / META_NAME).is_file():
        tmp.rename(run.vae)
    if run.vae.exists():
        shutil.rmtree(old, ignore_errors=True)


def stage_decoder(cfg: DiffCXRConfig, run: RunDir, progress: bool = True) -> Path:
    """Sharpen the VAE's decoder (``decoder.steps`` > 0) on the run's training images; the
    encoder, and so the latents every other stage sees, stay as they were. Resumable from
    ``checkpoints/decoder``; the tuned latent space replaces ``vae/`` when it is done."""
    import json
    import shutil
    from dataclasses import asdict

    # 1. Tune the decoder of the run's latent space on its training images.
    images, train = train_images(cfg, run, progress)
    space = LatentSpace.load(run.vae)
    tuned = tune_decoder(space, images, cfg.decoder, run.checkpoints("decoder"),
                         run.root / "metrics_decoder.jsonl", progress)
    # 2. Write the tuned folder beside vae/, then swap it in (interrupted between the two
    #    renames, the next run of any stage finishes the swap: finish_decoder_swap).
    saved = json.loads((run.vae / META_NAME).read_text())
    tmp, old = run.root / ".vae-tuned", run.root / ".vae-untuned"
    shutil.rmtree(tmp, ignore_errors=True)
    tuned.save(tmp, {k: v for k, v in saved.items() if k not in tuned.meta()}
               | {"decoder_tune": asdict(cfg.decoder) | {"train_images": len(train)}})
    shutil.rmtree(old, ignore_errors=True)
    run.vae.rename(old)
    tmp.rename(run.vae)
    shutil.rmtree(old)
    return run.vae


def stage_text(cfg: DiffCXRConfig, run: RunDir, progress: bool = True) -> Path:
    """AVA-TLS: contrastively tune the report encoder + squeeze on (text, image) pairs."""
    import numpy as np


    images, train = train_images(cfg, run, progress)
    texts = prompts_for(train, cfg.data.prompts, cfg.train.seed)
    train_text(texts, np.array(images), cfg.text, run.text, progress=progress,
               checkpoints=run.checkpoints("text"))
    _drop_checkpoints(run, "text")
    return run.text


def _check_perceptual_nets(cfg: DiffCXRConfig, run: RunDir, last: int) -> None:
    """Refuse a missing or wrong ``*.perceptual_net`` of a stage that will train, before any does
    (not after hours of VAE training, at the decoder)."""
    if cfg.vae.perceptual_weight and not cfg.vae.pretrained and not (run.vae / "config.json").is_file():
        classifier_folder(cfg.vae.perceptual_net, "vae.perceptual_net")
    if last >= STAGES.index("decoder") and cfg.decoder.perceptual_weight and not cfg.train.init_from \
            and decoder_tuned_steps(run) < cfg.decoder.steps:
        classifier_folder(cfg.decoder.perceptual_net, "decoder.perceptual_net")


def train_run(cfg: DiffCXRConfig, out: Path, stages: list[str], overwrite: bool = False,
          progress: bool = True, max_steps: int | None = None) -> RunDir:
    """Run the requested stages in order, each after any missing prerequisite."""
    from accelerate import PartialState


    # Under `accelerate launch`, the main process prepares everything shared on disk (run
    # folder, frozen components, caches) first; the others then find it there.
    state = PartialState()
    src = init_source(cfg)
    with state.main_process_first():
        run = open_run(cfg, out, overwrite if state.is_main_process else False,
                       main=state.is_main_process)
        if state.is_main_process:
            adopt_init(cfg, run, src)
    wanted = set(stages)
    last = max(STAGES.index(s) for s in wanted)
    _check_perceptual_nets(cfg, run, last)
    for stage in STAGES[: last + 1]:
        if stage == "decoder":  # on the main process (the others wait): an in-place swap of vae/
            if src is None and cfg.decoder.steps and check_decoder(cfg, run) != cfg.decoder.steps:
                with state.main_process_first():
                    if state.is_main_process:
                        with timed_stage(run.root, "decoder"):
                            stage_decoder(cfg, run, progress)
            continue
        folder = {"vae": run.vae, "text": run.text, "1": run.denoiser, "2": run.adapter}[stage]
        # more stage-1 steps: train on from the checkpoint; the old export stays usable until the
        # new one replaces it. An adapter fitted to an older stage 1 restarts.
        stale = stage in ("1", "2") and _stale(run, stage, cfg)
        if stage == "2" and stale and state.is_main_process:
            _discard_adapter(run)
        state.wait_for_everyone()
        done = (folder / "config.json").is_file() and not (stage == "1" and stale)
        if done and (stage not in wanted or stage in ("vae", "text") or _finished(run, stage, cfg)):
            continue  # already there; frozen components are never retrained in place
        if stage in ("vae", "text"):
            with state.main_process_first():
                if not (folder / "config.json").is_file():
                    with timed_stage(run.root, stage, state.is_main_process):
                        (stage_vae if stage == "vae" else stage_text)(cfg, run, progress)
        else:
            with timed_stage(run.root, f"stage{stage}", state.is_main_process):
                run_stage(cfg, run, int(stage), progress, max_steps, src)
    if state.is_main_process:
        if last >= STAGES.index("1") and (run.denoiser / "config.json").is_file():
            write_signal_leak(cfg, run, progress)  # the sampler's start (sample.signal_leak)
            if cfg.sample.intensity_match:  # fitted to the finished generator's samples
                write_intensity_map(cfg, run, progress)
        write_model_card(cfg, run)
    return run


def _meta(folder: Path) -> dict:
    """A component's ``meta``; {} when absent or damaged (a damaged export is retrained)."""
    return RunDir(folder.parent).meta(folder.name)


def _stale(run: RunDir, stage: str, cfg: DiffCXRConfig) -> bool:
    """Stage 1 exported with fewer steps than asked; stage 2 fitted to another stage-1 export."""
    if stage == "1":
        m = _meta(run.denoiser)
        return bool(m) and m.get("steps") != cfg.train.steps
    m = run.meta("adapter")  # an adapter from before base_steps was recorded counts as stale here
    return bool(m) and m.get("base_steps") != run.meta("denoiser").get("steps")


def _finished(run: RunDir, stage: str, cfg: DiffCXRConfig) -> bool:
    """Stage 1 or 2 exported intact with the asked steps (2: on this stage 1): nothing to do.
    A damaged export is not finished: the stage reruns and rewrites it from its checkpoint."""
    folder = run.denoiser if stage == "1" else run.adapter
    asked = cfg.train.steps if stage == "1" else cfg.adapter.steps
    if _meta(folder).get("steps") != asked or _stale(run, stage, cfg):
        return False
    try:
        check_component(folder)
    except CxraugError:
        return False
    return True


def _discard_adapter(run: RunDir) -> None:
    """Forget a stale adapter, which restarts. (A stale stage-1 export is never deleted: it
    stays usable until its retrained replacement is written over it.)"""
    import shutil

    shutil.rmtree(run.adapter, ignore_errors=True)
    shutil.rmtree(run.checkpoints(2), ignore_errors=True)
    run.metrics(2).unlink(missing_ok=True)
