"""The latent space: a KL autoencoder that maps chest X-rays to diffusion latents and back.

Two ways to get one, one interface (:class:`LatentSpace`):

* :func:`load_pretrained_vae` - a frozen diffusers ``AutoencoderKL`` such as Stable Diffusion's
  KL-f8 (``4 x H/8 x W/8``, scale 0.18215), as in Diff-CXR. It is an RGB model, so grayscale is
  repeated to three channels only at its boundary and its outputs are averaged back to one.
* :func:`~cxraug.models.vae_train.build_vae` + :func:`~cxraug.models.vae_train.train_vae` - a
  small single-channel ``AutoencoderKL`` trained here (CPU-sized). Its latents are standardised
  per channel (``latents_mean`` / ``latents_std`` in the diffusers config, the convention of
  Playground v2.5 / SDXL pipelines) or, with ``latent_norm: global``, scaled by ``1 / std`` as in
  LDM. A small VAE's channels differ a lot (std 0.26 to 1.37, means to -1.3 on Kermany), and one
  global scale leaves the quiet channels drowned in noise early in the forward process: denoisers
  trained on them give blotchy images.

Images enter and leave in the generator range ``[-1, 1]`` as ``[B, 1, H, W]``. Latent moments
(mean and log-variance) are cached once per dataset with :func:`cache_moments`; a diffusion
training step then draws a fresh ``z`` from them with :meth:`LatentSpace.sample`.

A latent-space folder is a diffusers folder (``config.json`` +
``diffusion_pytorch_model.safetensors``) plus ``cxraug_latent.json`` (image size, pixel range,
scale factor, latent shape), so diffusers can open it too.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch import nn

from cxraug.core.config import ConfigError
from cxraug.core.errors import WeightsError
from cxraug.data.transforms import check_model_range, gray_to_rgb, rgb_to_gray, uint8_to_model

META_NAME = "cxraug_latent.json"
SD_SCALE_FACTOR = 0.18215
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class LatentSpace(nn.Module):
    """A frozen or trainable diffusers ``AutoencoderKL`` seen through single-channel images.

    Attributes: ``latent_channels`` (C), ``downsample`` (f), ``scale_factor``, ``image_size``
    (H = W), ``latent_shape`` = ``(C, H/f, W/f)``, ``rgb`` (True for pretrained RGB VAEs).
    """

    def __init__(self, vae: AutoencoderKL, image_size: int, scale_factor: float | None = None,
                 source: str = "", subfolder: str | None = None):
        super().__init__()
        self.vae = vae
        cfg = vae.config
        if cfg.in_channels not in (1, 3) or cfg.out_channels != cfg.in_channels:
            raise WeightsError(f"{source or 'autoencoder'}: expected 1 or 3 image channels in and out, "
                               f"got {cfg.in_channels} -> {cfg.out_channels}")
        self.rgb = cfg.in_channels == 3
        self.latent_channels = int(cfg.latent_channels)
        self.downsample = 2 ** (len(cfg.block_out_channels) - 1)
        self.scale_factor = float(scale_factor if scale_factor is not None else cfg.scaling_factor)
        self.shift_factor = float(cfg.shift_factor) if cfg.shift_factor is not None else 0.0
        mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        self.latents_mean = [float(v) for v in mean] if mean is not None else None
        self.latents_std = [float(v) for v in std] if std is not None else None
        if image_size % self.downsample:
            raise ConfigError(f"image_size {image_size} is not divisible by the VAE downsampling "
                              f"factor {self.downsample}")
        self.image_size = int(image_size)
        self.source, self.subfolder = str(source), subfolder
        self._fingerprint: str | None = None

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.image_size // self.downsample
        return (self.latent_channels, side, side)

    # ------------------------------------------------------------------------ encode / decode

    def encode_moments(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W]`` in [-1, 1] -> moments ``[B, 2C, h, w]`` (mean, then log-variance)."""
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected images [B, 1, {self.image_size}, {self.image_size}] in [-1, 1], "
                             f"got {tuple(x.shape)}")
        check_model_range(x, "latent space input")
        x = x.to(self.vae.device, self.vae.dtype)
        if self.rgb:
            x = gray_to_rgb(x)
        return self.vae.encode(x).latent_dist.parameters

    def sample(self, moments: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Moments ``[B, 2C, h, w]`` -> scaled latents ``z`` ``[B, C, h, w]`` (``scale * (z - shift)``).

        Half-precision cached moments are computed with in float32.
        """
        moments = moments.float() if moments.dtype in (torch.float16, torch.bfloat16) else moments
        return self.normalise(DiagonalGaussianDistribution(moments).sample(generator))

    def mode(self, moments: torch.Tensor) -> torch.Tensor:
        """The posterior mean as scaled latents (deterministic)."""
        return self.normalise(moments.float().chunk(2, dim=1)[0])

    def _channel_stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1)
        return (torch.tensor(self.latents_mean, device=z.device, dtype=z.dtype).view(shape),
                torch.tensor(self.latents_std, device=z.device, dtype=z.dtype).view(shape))

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents -> diffusion latents: ``(z - mean_c) * scale / std_c`` with per-channel
        statistics, else ``(z - shift) * scale``."""
        if self.latents_mean is not None:
            mean, std = self._channel_stats(z)
            return (z - mean) * self.scale_factor / std
        return (z - self.shift_factor) * self.scale_factor

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`normalise`."""
        if self.latents_mean is not None:
            mean, std = self._channel_stats(z)
            return z * std / self.scale_factor + mean
        return z / self.scale_factor + self.shift_factor

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[B, 1, H, W]`` in [-1, 1] -> sampled scaled latents ``[B, C, h, w]``."""
        return self.sample(self.encode_moments(x), generator)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``[B, C, h, w]`` -> images ``[B, 1, H, W]`` clamped to [-1, 1]."""
        z = self.denormalise(z.to(self.vae.device, self.vae.dtype))
        x = self.vae.decode(z).sample
        if self.rgb:
            x = rgb_to_gray(x)
        return x.float().clamp(-1.0, 1.0)

    # ------------------------------------------------------------------------ identity and io

    def meta(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "pixel_range": [-1.0, 1.0], "image_channels": 1,
                "vae_channels": 3 if self.rgb else 1, "scale_factor": self.scale_factor,
                "shift_factor": self.shift_factor, "latents_mean": self.latents_mean,
                "latents_std": self.latents_std, "latent_shape": list(self.latent_shape),
                "downsample": self.downsample, "source": self.source, "subfolder": self.subfolder}

    def fingerprint(self) -> str:
        """A stable hash of config, scale and weights, for cache keys (computed once); where the
        folder was loaded from (diffusers' ``_name_or_path``) is left out, so a moved or copied
        run keeps its caches."""
        if self._fingerprint is None:
            config = {k: v for k, v in dict(self.vae.config).items() if k != "_name_or_path"}
            h = hashlib.sha256(json.dumps(self.meta() | {"config": config},
                                          sort_keys=True, default=str).encode())
            for name, t in sorted(self.vae.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def save(self, folder: str | Path, extra_meta: dict[str, Any] | None = None) -> Path:
        """Write the diffusers folder plus ``cxraug_latent.json``."""
        folder = Path(folder)
        self.vae.register_to_config(scaling_factor=self.scale_factor, latents_mean=self.latents_mean,
                                    latents_std=self.latents_std)
        self.vae.save_pretrained(str(folder), safe_serialization=True)
        cfg_path = folder / "config.json"  # diffusers records where it was loaded from: a path of this machine
        cfg = json.loads(cfg_path.read_text())
        if cfg.pop("_name_or_path", None) is not None:
            cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        (folder / META_NAME).write_text(json.dumps(self.meta() | (extra_meta or {}), indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> LatentSpace:
        """Load a folder written by :meth:`save` (frozen, eval mode)."""
        folder = Path(folder)
        meta_path = folder / META_NAME
        if not meta_path.is_file():
            raise WeightsError(f"{folder}: no {META_NAME}; expected a latent space saved by cxraug "
                               f"(for a diffusers VAE folder use load_pretrained_vae)")
        meta = json.loads(meta_path.read_text())
        vae = _from_pretrained(str(folder), None, local_files_only=True).float()  # fp16 exports too
        space = cls(vae, meta["image_size"], meta["scale_factor"], meta.get("source", ""),
                    meta.get("subfolder"))
        space.latents_mean, space.latents_std = meta.get("latents_mean"), meta.get("latents_std")
        return space.to(device).freeze()

    def freeze(self) -> LatentSpace:
        self.vae.requires_grad_(False)
        return self.eval()


def _from_pretrained(source: str, subfolder: str | None, local_files_only: bool) -> AutoencoderKL:
    try:
        return AutoencoderKL.from_pretrained(source, subfolder=subfolder,
                                             local_files_only=local_files_only)
    except (OSError, ValueError) as e:
        where = f"{source}" + (f" (subfolder {subfolder})" if subfolder else "")
        raise WeightsError(f"{where}: cannot load an AutoencoderKL ({str(e).splitlines()[0][:120]}); "
                           f"download it to a folder (e.g. `hf download stabilityai/sd-vae-ft-mse "
                           f"--local-dir DIR`) and pass that folder") from None


def load_pretrained_vae(source: str, subfolder: str | None = None, image_size: int = 256,
                        scale_factor: float | None = None, local_files_only: bool | None = None,
                        device: str | torch.device = "cpu") -> LatentSpace:
    """A frozen pretrained diffusers ``AutoencoderKL`` (hub id or local folder).

    ``source`` examples: ``"stabilityai/sd-vae-ft-mse"``, ``"CompVis/stable-diffusion-v1-4"`` with
    ``subfolder="vae"``, or a local folder. A local path is read with ``local_files_only=True``;
    a hub id is looked up online unless ``local_files_only`` (or ``HF_HUB_OFFLINE``) says otherwise.
    ``scale_factor`` defaults to the VAE config's ``scaling_factor`` (0.18215 for SD v1).
    """
    path = Path(source).expanduser()
    is_local = path.exists() or not _HUB_ID.match(source)
    if is_local and not path.is_dir():
        raise WeightsError(f"{source}: VAE folder not found; pass a local folder holding config.json "
                           f"and diffusion_pytorch_model.safetensors (or a hub id like "
                           f"stabilityai/sd-vae-ft-mse)")
    vae = _from_pretrained(str(path) if is_local else source, subfolder,
                           local_files_only=True if is_local else bool(local_files_only))
    return LatentSpace(vae, image_size, scale_factor, source, subfolder).to(device).freeze()


def first_output(item: Any) -> torch.Tensor:
    return item[0] if isinstance(item, (tuple, list)) else item


# ---------------------------------------------------------------------------- moment cache

def _batches(images: np.ndarray | Iterable, batch_size: int) -> Iterable[torch.Tensor]:
    """Yield generator-range batches ``[b, 1, H, W]`` from uint8 arrays or batch iterables."""
    if isinstance(images, np.ndarray):
        for start in range(0, len(images), batch_size):
            yield uint8_to_model(np.asarray(images[start:start + batch_size]))
        return
    for b in images:
        b = first_output(b)
        if isinstance(b, np.ndarray) or (torch.is_tensor(b) and b.dtype == torch.uint8):
            yield uint8_to_model(b)  # uint8 [b, H, W]
        else:
            yield b  # already [b, 1, H, W] in [-1, 1]


@torch.no_grad()
def cache_moments(space: LatentSpace, images: np.ndarray | Iterable, path: str | Path,
                  key: str = "", batch_size: int = 16, dtype: str = "float16",
                  progress: bool = True) -> np.ndarray:
    """Encode every image once and keep its moments on disk as ``.npy``; returns a read-only memmap.

    ``images``: ``uint8 [N, H, W]`` (memmaps fine) or an iterable of batches (``uint8 [b, H, W]``
    or ``[b, 1, H, W]`` in [-1, 1]). Result: ``[N, 2C, h, w]`` in ``dtype``. ``key`` names the
    content (the caller's hash of the image list); with the latent space's fingerprint it is stored
    in ``<path>.json`` and a mismatch re-encodes. Sample ``z`` each step with ``space.sample``.
    """
    from rich.progress import Progress

    path = Path(path)
    if path.suffix != ".npy":
        path = path.with_suffix(".npy")
    side = path.with_suffix(".json")
    ident = {"key": key, "latent_space": space.fingerprint(), "dtype": dtype}
    if path.is_file() and side.is_file() and json.loads(side.read_text()).get("ident") == ident:
        return np.load(path, mmap_mode="r")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    c2, h, w = 2 * space.latent_channels, *space.latent_shape[1:]
    total = len(images) if isinstance(images, np.ndarray) else None
    chunks, out, n = [], None, 0
    if total is not None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(total, c2, h, w))
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("caching latent moments", total=total)
        for x in _batches(images, batch_size):
            m = space.encode_moments(x).float().cpu().numpy().astype(dtype)
            if out is not None:
                out[n:n + len(m)] = m
            else:
                chunks.append(m)
            n += len(m)
            bar.update(task, advance=len(m))
    if out is not None:
        out.flush()
        del out
    else:
        np.save(tmp, np.concatenate(chunks) if chunks else np.zeros((0, c2, h, w), dtype))
    tmp.replace(path)
    side.write_text(json.dumps({"ident": ident, "shape": [n, c2, h, w], "meta": space.meta()}, indent=2))
    return np.load(path, mmap_mode="r")
