"""``train.init_from``: stage 1 fine-tunes another model's U-ViT instead of training one from
scratch (docs/training.md, fine-tuning a trained model).

:func:`init_source` checks the source before the run folder is touched; :func:`adopt_init` gives
the run the source's latent space, report encoder and splits before any stage runs;
:func:`init_weights` loads the source's U-ViT weights when stage 1 builds its model, unless a
checkpoint of the run will be resumed (its own weights are there). The decoder stage has nothing
to do in such a run: its latent space, decoder tuning included, is the source's.
"""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

from cxraug.core.errors import CxraugError
from cxraug.core.runs import RunDir
from cxraug.diffusion.config import DiffCXRConfig
from cxraug.models.uvit import UViT
from cxraug.models.zoo import resolve_model


def _same_folder(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir() if p.is_file())
    return names == sorted(p.name for p in b.iterdir() if p.is_file()) and all(
        filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def init_source(cfg: DiffCXRConfig) -> Path | None:
    """The folder ``train.init_from`` names (None when unset), refused in one line, before the
    run folder is touched, when it is missing or lacks a component."""
    ref = cfg.train.init_from
    if not ref:
        return None
    src = resolve_model(ref, "train.init_from")
    for part in ("vae", "text", "denoiser"):
        if not (src / part / "config.json").is_file():
            raise CxraugError(f"train.init_from {ref}: no {part}/config.json there; name a run "
                              "folder from cxraug train, a folder from cxraug export or a shipped model")
    return src


def adopt_init(cfg: DiffCXRConfig, run: RunDir, src: Path | None) -> None:
    """``train.init_from`` (``src``: :func:`init_source`'s folder; None: nothing to do): the run
    fine-tunes another model's U-ViT, which was trained on that model's latent space and report
    encoder, so the run takes both (copied into ``vae/`` and ``text/``: the VAE, decoder and text
    stages have nothing left to do) and, from a run folder, its ``splits.csv`` (the images the
    source held out stay held out). Refuses a run whose own ``vae/`` or ``text/`` differ."""
    if src is None:
        return
    ref = cfg.train.init_from
    if (src / "splits.csv").is_file() and not run.splits.is_file():
        shutil.copyfile(src / "splits.csv", run.splits)
    for part in ("vae", "text"):
        mine = run.root / part
        if mine.exists():
            if not _same_folder(mine, src / part):
                raise CxraugError(f"{mine}: differs from {part}/ of train.init_from {ref}, on which "
                                  "its U-ViT was trained; fine-tune into a new --out")
            continue
        tmp = run.root / f".{part}-copy"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src / part, tmp)
        tmp.rename(mine)


def init_weights(base: UViT, src: Path, ref: str, load: bool = True) -> dict:
    """``train.init_from`` ``ref``, resolved to ``src`` by :func:`init_source`: load the source
    model's stage-1 U-ViT weights into ``base`` (``load`` False: a checkpoint will replace them;
    nothing is loaded); returns what the export records (the source's folder name and its stage-1
    steps)."""
    name = Path(ref).name if Path(ref).is_absolute() else ref  # no absolute paths in an export
    if not load:
        return {"name": name, "steps": RunDir(src).meta("denoiser").get("steps")}
    source = UViT.from_pretrained(src / "denoiser")
    try:
        base.load_state_dict(source.state_dict())
    except RuntimeError:
        raise CxraugError(f"train.init_from {ref}: its U-ViT ({src / 'denoiser' / 'config.json'}) is "
                          "not the one denoiser.* of this recipe builds; use the source's denoiser "
                          "settings") from None
    return {"name": name, "steps": source.meta.get("steps")}
