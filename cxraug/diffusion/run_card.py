"""The model card a run writes for itself (``README.md``): what it is, what it was trained on, what
it cost and what it is not for."""

from __future__ import annotations

import json
from pathlib import Path

from cxraug import __version__
from cxraug.core.runs import RunDir, cost_by_stage, training_cost
from cxraug.diffusion.config import DiffCXRConfig
from cxraug.models.autoencoder import META_NAME


def decoder_tuned_steps(run: RunDir) -> int:
    """Steps of decoder tuning behind the run's latent space (0: as the VAE stage left it)."""
    try:
        return int(json.loads((run.vae / META_NAME).read_text()).get("decoder_tune", {}).get("steps", 0))
    except (OSError, ValueError, AttributeError, TypeError):
        return 0


def _cost_lines(run: RunDir) -> list[str]:
    """The model card's training-cost table (``training_cost.json``), if anything was recorded."""
    by_stage = cost_by_stage(training_cost(run.root))
    if not by_stage:
        return []
    rows = [f"| {stage} | {c['hours']:.2f} | {c['calls']} | {'; '.join(c['machines'])} |"
            for stage, c in by_stage.items()]
    return ["## Training cost",
            "Wall time of each stage as `cxraug train` measured it (data loading included; a resumed",
            "stage adds its calls; a killed call is not counted):", "",
            "| stage | hours | calls | machine |", "|---|---|---|---|", *rows,
            f"| all | {sum(c['hours'] for c in by_stage.values()):.2f} | | |", ""]


def write_model_card(cfg: DiffCXRConfig, run: RunDir) -> Path:
    """README.md for the run: what it is, what it was trained on, what it is not for."""
    den, ada = run.meta("denoiser"), run.meta("adapter")
    lines = [
        f"# Diff-CXR run `{run.root.name}`",
        "",
        f"Trained with cxraug {__version__}. Components: "
        + ", ".join(n for n, f in (("vae", run.vae), ("text", run.text), ("denoiser", run.denoiser),
                                   ("adapter", run.adapter)) if f.exists()) + ".",
        "",
        "## Data",
        f"- data: `{cfg.data.data}` (adapter `{cfg.data.dataset}`), training split of `splits.csv`,"
        f" real fraction {cfg.data.real_frac:g}; {den.get('n_train_images', '?')} images.",
        f"- image size {cfg.data.image_size} px, single channel, pixels in [-1, 1]; text: "
        f"{'reports' if cfg.data.prompts == 'reports' else cfg.data.prompts + ' prompts from labels where no report exists'}.",
        f"- LNFS filter: {cfg.data.filter or 'none'}.",
        "",
        "## Model",
        f"- latent space: {cfg.vae.pretrained or 'single-channel AutoencoderKL trained by cxraug'};"
        f" latents {den.get('latent_shape', '?')}"
        + (f"; decoder tuned {decoder_tuned_steps(run)} steps (L1 + PatchGAN, encoder frozen)."
           if decoder_tuned_steps(run) else "."),
        f"- report encoder: {cfg.text.encoder} + information squeeze to {cfg.text.cond_tokens} tokens.",
        f"- denoiser: U-ViT preset `{cfg.denoiser.preset}`, stage 1 {den.get('steps', 'not trained')} steps"
        + (f" (fine-tuned from `{den['init_from']['name']}`, {den['init_from']['steps']} steps)"
           if den.get("init_from") else "")
        + f"; DKIM adapter: {ada.get('steps', 'not trained')} steps.",
        f"- sampling default: {cfg.sample.sampler} {cfg.sample.steps} steps, guidance {cfg.sample.guidance}"
        + (", Karras noise levels" if cfg.sample.karras_sigmas and cfg.sample.sampler == "dpm++" else "")
        + (", starting from the training latents' signal leak" if cfg.sample.signal_leak else "")
        + (f", the coarse layout (blur {cfg.sample.intensity_sigma:g} px) mapped to the training images'"
           " intensities." if cfg.sample.intensity_match else "."),
        "",
        *_cost_lines(run),
        "## Intended use",
        "Research on synthetic data for chest X-ray classifiers. Not for diagnosis, not a source of",
        "clinical images, and not evidence of any finding in a real patient. Generated images can",
        "reproduce biases of the training data; check label fidelity and memorisation (`cxraug synth`",
        "gates) before use.",
    ]
    path = run.root / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path
