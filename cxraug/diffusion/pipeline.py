"""``DiffCXRPipeline``: reports (+ target labels) -> chest X-rays, from a run folder.

    pipe = DiffCXRPipeline.from_pretrained("runs/kermany-cpu")
    images = pipe(["Right lower lobe consolidation."], labels=[vec], seeds=[0])   # uint8 [1, H, W]

With a stage-2 adapter in the run, the DKIM hint for each image is the paper's template for
its target labels ("There is pneumonia."); without labels it is "There is no finding.". The
hint is never fixed to "no finding" when labels are given (a bug of the public code).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cxraug.core import config as C
from cxraug.core.artifacts import check_component
from cxraug.core.errors import CxraugWarning, WeightsError
from cxraug.core.runs import RunDir
from cxraug.data import labels as L
from cxraug.data.templates import paper_hint
from cxraug.data.transforms import model_to_uint8
from cxraug.diffusion.config import DiffCXRConfig, SampleConfig
from cxraug.diffusion.denoiser import Condition, Denoiser
from cxraug.diffusion.intensity import INTENSITY_NAME, IntensityMap
from cxraug.diffusion.sampling import (
    initial_noise,
    make_sampler,
    noise_scheduler,
    sample,
    scheduler_for,
)
from cxraug.diffusion.signal_leak import LEAK_NAME, SignalLeak
from cxraug.models.adapter import ControlledUViT, DiseaseAdapter
from cxraug.models.autoencoder import META_NAME, LatentSpace
from cxraug.models.uvit import UViT
from cxraug.models.zoo import resolve_model
from cxraug.text.squeeze import ReportEncoder


def check_run_files(run, parts: tuple[str, ...] = ("vae", "text", "denoiser", "adapter")) -> None:
    """Name the first damaged file (truncated or overwritten weights, broken JSON) of the run
    components in ``parts`` as one :class:`~cxraug.core.errors.WeightsError` line, before any of them
    is loaded. The VAE folder is diffusers', the others are cxraug components."""

    for part in parts:
        if part == "vae":
            check_component(run.vae, "*.safetensors", ("config.json", META_NAME))
        else:
            check_component(getattr(run, part))


class DiffCXRPipeline:
    """Latent space + report encoder + U-ViT (+ optional DKIM adapter) + a sampler.

    ``model`` is the network (the U-ViT, or the adapter-steered ``ControlledUViT``; callers may
    wrap it, e.g. in bf16 autocast); :attr:`denoise` calls it as ``net(x_t, t, cond)``."""

    def __init__(self, latent_space, report_encoder, denoiser, adapter=None,
                 sample_cfg: SampleConfig | None = None, train_cfg=None, device: str = "cpu",
                 leak: SignalLeak | None = None, intensity: IntensityMap | None = None):

        self.space, self.encoder = latent_space.eval(), report_encoder.eval()
        self.denoiser = denoiser.eval()
        self.adapter = adapter.eval() if adapter is not None else None
        self.model = ControlledUViT(denoiser, adapter) if adapter is not None else denoiser
        self.sample_cfg = sample_cfg or SampleConfig()
        self.leak = leak  # the sampler starts from noise with the training signal leak
        self.intensity = intensity  # the decoded images' coarse layout mapped to the training images'
        tc = train_cfg
        self.train_scheduler = scheduler_for(tc) if tc else noise_scheduler()
        self.device = torch.device(device)
        with torch.no_grad():
            self.null = self.encoder.encode([""])[1][0].float()

    @classmethod
    def from_pretrained(cls, run_dir: str | Path, device: str = "cpu", use_adapter: bool = True):
        """Load every component from a run folder written by ``cxraug train``, a packaged model
        (``cxraug export``), a shipped model name (``kermany-128``) or a hub id."""

        run = RunDir(resolve_model(run_dir))
        if not (run.denoiser / "config.json").is_file():
            raise WeightsError(f"{run.root}: no trained denoiser (denoiser/config.json); pass a run "
                               "folder written by cxraug train --stage 1")
        cfg = C.load(DiffCXRConfig, run.root / "config.yaml") if (run.root / "config.yaml").is_file() \
            else DiffCXRConfig()
        return cls.from_run(run, cfg, device, use_adapter)

    @classmethod
    def from_run(cls, run: RunDir, cfg: DiffCXRConfig, device: str = "cpu", use_adapter: bool = True):
        """Load the components of a resolved run folder with its config (a cohort's
        ``LoadedGenerator`` has read both already). A stale adapter is a warning and left out;
        a damaged component file is named in one line before anything loads."""
        use_adapter = use_adapter and (run.adapter / "config.json").is_file()
        stale = run.stale_adapter() if use_adapter else None
        if stale:
            warnings.warn(stale, CxraugWarning, stacklevel=3)
            use_adapter = False
        check_run_files(run, ("vae", "text", "denoiser") + (("adapter",) if use_adapter else ()))
        space = LatentSpace.load(run.vae, device)
        encoder = ReportEncoder.from_pretrained(run.text, device)
        den = UViT.from_pretrained(run.denoiser, device)
        ada = DiseaseAdapter.from_pretrained(run.adapter, device) if use_adapter else None
        leak = SignalLeak.load(run.denoiser / LEAK_NAME) if cfg.sample.signal_leak else None
        imap = IntensityMap.load(run.denoiser / INTENSITY_NAME) if cfg.sample.intensity_match else None
        pipe = cls(space, encoder, den, ada, cfg.sample, cfg.train, device, leak, imap)
        pipe.run = run
        return pipe

    @property
    def has_adapter(self) -> bool:
        return self.adapter is not None

    @property
    def denoise(self) -> Denoiser:
        """``self.model`` (as it is now) behind the one call signature ``net(x_t, t, cond)``."""
        return Denoiser(self.model, uses_hint=self.has_adapter)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encoder.encode(list(texts))[1].float().to(self.device)

    @torch.inference_mode()
    def latents(self, reports: Sequence[str], seeds: Sequence[int], labels: np.ndarray | None = None,
                steps: int | None = None, guidance: float | None = None,
                sampler: str | None = None) -> torch.Tensor:
        """One batch: reports + per-image seeds (+ target labels for the hint) -> ``z_0``."""

        sc = self.sample_cfg
        steps, guidance = steps or sc.steps, sc.guidance if guidance is None else guidance
        scheduler = make_sampler(sampler or sc.sampler, self.train_scheduler, sc.karras_sigmas)
        ctx, hint = self.encode(reports), None
        if self.has_adapter:  # the DKIM hint of the target labels
            vecs = labels if labels is not None else np.stack([L.empty_vector()] * len(reports))
            hint = self.encode([paper_hint(v) for v in np.atleast_2d(vecs)])
        null = self.null.to(self.device)
        cond, null = Condition(ctx, hint), Condition(null, null)
        noise = initial_noise(seeds, self.space.latent_shape, self.device)
        if self.leak is not None:  # mixed in as the forward process mixes a training latent
            scheduler.set_timesteps(steps, device=self.device)
            abar = float(self.train_scheduler.alphas_cumprod[int(scheduler.timesteps[0])])
            noise = self.leak.start(noise, seeds, abar)
        return sample(self.denoise, scheduler, noise, cond, null, steps, guidance)

    @torch.inference_mode()
    def __call__(self, reports: Sequence[str], seeds: Sequence[int] | None = None,
                 labels: np.ndarray | None = None, steps: int | None = None,
                 guidance: float | None = None, sampler: str | None = None,
                 batch_size: int | None = None) -> np.ndarray:
        """Reports -> ``uint8 [N, H, W]`` images. ``seeds`` default to ``0..N-1``; image ``i``
        depends only on its report, labels and seed, never on the batch it ran in."""

        reports = list(reports)
        seeds = list(range(len(reports))) if seeds is None else list(seeds)
        if len(seeds) != len(reports):
            raise ValueError(f"{len(seeds)} seeds for {len(reports)} reports")
        bs = batch_size or self.sample_cfg.batch_size
        out = []
        for i in range(0, len(reports), bs):
            lab = None if labels is None else np.atleast_2d(labels)[i:i + bs]
            z = self.latents(reports[i:i + bs], seeds[i:i + bs], lab, steps, guidance, sampler)
            x = self.space.decode(z)
            out.append(model_to_uint8(self.intensity.apply(x) if self.intensity is not None else x))
        return np.concatenate(out) if out else np.zeros((0, self.space.image_size, self.space.image_size), np.uint8)


def grid_image(images: np.ndarray, rows: int) -> np.ndarray:
    """``uint8 [N, H, W]`` -> one ``uint8`` mosaic with ``rows`` rows (2-pixel gaps)."""
    n, h, w = images.shape
    cols = int(np.ceil(n / rows))
    canvas = np.full((rows * (h + 2), cols * (w + 2)), 255, np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        canvas[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = images[k]
    return canvas


def write_grid(pipe: DiffCXRPipeline, prompts: list[tuple[str, np.ndarray]], path: Path,
               sample_cfg: SampleConfig) -> Path:
    """A sample grid: one row per fixed validation prompt, ``grid_per_prompt`` seeds each."""
    from PIL import Image

    k = sample_cfg.grid_per_prompt
    reports = [p for p, _ in prompts for _ in range(k)]
    labels = np.stack([v for _, v in prompts for _ in range(k)])
    images = pipe(reports, seeds=list(range(len(reports))), labels=labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid_image(images, len(prompts))).save(path)
    (path.with_suffix(".txt")).write_text("\n".join(p for p, _ in prompts) + "\n")
    return path
