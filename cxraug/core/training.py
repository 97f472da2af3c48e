"""The training kit of every cxraug training loop: batch order, EMA, checkpoints and resume.

A loop resumes exactly after a kill when everything random in a step is either drawn from a
generator seeded by the step (:class:`BatchOrder` and ``stable_seed(seed, ..., step)``: the
denoiser and decoder loops) or restored from the checkpoint (:class:`EpochReplay` and the
generator states a :class:`TrainState` saves: the VAE and report-encoder loops, whose data order
predates the kit and is kept so their results stay byte-identical). Rerun with the same
arguments, a loop resumes from its newest intact checkpoint and repeats the uninterrupted run's
steps; a damaged newer checkpoint is skipped (said in one line)::

    state = TrainState(model, opt, ema=ema, lr_sched=sched)
    start = state.resume(ckpt_dir)             # 0 when there is no checkpoint
    log.resume(start)                          # cxraug.core.progress.MetricsLog
    for step in range(start, steps):
        ...                                    # batch, loss, update, ema.update_parameters
        if (step + 1) % every == 0:
            state.save(ckpt_dir, step + 1, keep=2)

A checkpoint is one folder ``step_XXXXXXXX``: ``model.safetensors`` (the trained weights),
``ema.safetensors`` (with an EMA), ``optimizer.pt`` (tensors only, loaded with
``weights_only=True``: never unpickled as code), ``rng.safetensors`` (with generator states)
and ``state.json`` (step, EMA count, scheduler, the loop's own values). It is written to a
temporary folder and renamed, so a kill never leaves a half-written one.
"""

from __future__ import annotations

import json
import pickle
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch.optim.swa_utils import AveragedModel

from cxraug.core.artifacts import load_weights
from cxraug.core.errors import CxraugError, WeightsError, writing
from cxraug.core.seeds import stable_seed

# ------------------------------------------------------------------------------ batch order


class BatchOrder:
    """Global sample positions -> dataset rows, via one seeded permutation per epoch. Stateless:
    step ``s`` of batch size ``b`` takes ``rows(s * b, b)`` whatever ran before it."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._perms: dict[int, np.ndarray] = {}

    def rows(self, start: int, count: int) -> np.ndarray:
        out = np.empty(count, dtype=np.int64)
        for k in range(count):
            epoch, j = divmod(start + k, self.n)
            if epoch not in self._perms:
                self._perms = {epoch: np.random.default_rng(stable_seed(self.seed, "epoch", epoch))
                               .permutation(self.n)}
            out[k] = self._perms[epoch][j]
        return out


class EpochReplay:
    """Batches of epochs that a generator orders (``make_epoch()``: a shuffling DataLoader's
    iterator, the rows of a ``randperm``), one after another, resumable.

    A checkpoint records the generator's state where the current epoch began and how many of its
    batches were taken; :meth:`restore` rebuilds that epoch from that state and skips them (their
    items are read again, nothing is computed). Epochs are built lazily, when their first batch is
    asked for, so the generator is drawn from exactly as a ``for batch in loader`` loop draws."""

    def __init__(self, make_epoch: Callable[[], Iterable], generator: torch.Generator):
        self.make_epoch, self.generator = make_epoch, generator
        self._it = None
        self._start: torch.Tensor | None = None
        self._taken = 0

    def next(self):
        """The next batch (a new epoch after the last one's last batch)."""
        for _ in range(2):
            if self._it is None:
                self._start, self._taken = self.generator.get_state(), 0
                self._it = iter(self.make_epoch())
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = None
                continue
            self._taken += 1
            return batch
        raise ValueError("an epoch without a batch: too few training items")

    def state(self) -> tuple[torch.Tensor | None, int]:
        """``(generator state at the epoch's start, batches taken)``; ``(None, 0)`` before any."""
        return (self._start if self._it is not None else None), self._taken

    def restore(self, start: torch.Tensor | None, taken: int) -> None:
        """Rebuild the epoch in progress at a checkpoint. It draws from the generator: restore the
        generator's own checkpointed state after this."""
        self._it, self._taken = None, 0
        if start is None:
            return
        self.generator.set_state(start)
        self._start, self._it = start, iter(self.make_epoch())
        for _ in range(taken):
            next(self._it)
        self._taken = taken


# ------------------------------------------------------------------------------ EMA


def ema_model(model: torch.nn.Module, decay: float) -> AveragedModel:
    """EMA of the trainable weights; the decay ramps up as ``(1 + n) / (10 + n)`` early on so a
    short CPU run's EMA is not dominated by the random initialisation."""
    def update(ema, cur, n):
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        torch._foreach_lerp_(ema, cur, 1.0 - d)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=False)


# ------------------------------------------------------------------------------ checkpoints


class DamagedCheckpoint(Exception):
    """A checkpoint folder with a missing, truncated or unreadable file (message: which, why)."""


def _weights(path: Path, name: str) -> dict[str, torch.Tensor]:
    try:
        return load_weights(path / name)
    except WeightsError:
        raise DamagedCheckpoint(f"{name} is missing, truncated or corrupt") from None


def read_checkpoint(path: Path, ema: bool = True, rng: bool = False,
                    state_keys: tuple[str, ...] = ("n_averaged", "lr_sched")) -> dict:
    """Every file of a checkpoint, read and checked before any of it is applied; raises
    :class:`DamagedCheckpoint` naming the first bad file. ``ema``/``rng``: the checkpoint must
    hold ``ema.safetensors``/``rng.safetensors``; ``state_keys``: what ``state.json`` must hold
    besides the step (the defaults are the denoiser's format)."""
    files = {"model.safetensors": _weights(path, "model.safetensors")}
    if ema:
        files["ema.safetensors"] = _weights(path, "ema.safetensors")
    try:
        files["optimizer.pt"] = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DamagedCheckpoint("optimizer.pt is missing") from None
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:
        # truncated zip (RuntimeError), empty file (EOFError), random bytes or a pickle that
        # holds more than tensors (UnpicklingError, refused by weights_only)
        why = type(e).__name__
        raise DamagedCheckpoint(f"optimizer.pt is truncated or corrupt ({why})") from None
    if rng:
        files["rng.safetensors"] = _weights(path, "rng.safetensors")
    try:
        state = json.loads((path / "state.json").read_text())
        files["state.json"] = state
        int(state["step"])
        for key in state_keys:
            state[key]
    except FileNotFoundError:
        raise DamagedCheckpoint("state.json is missing") from None
    except (ValueError, KeyError, TypeError):
        raise DamagedCheckpoint("state.json is empty or damaged") from None
    return files


def resumable_checkpoint(folder: Path, announce: bool = True,
                         read: Callable[[Path], dict] = read_checkpoint) -> tuple[Path, dict] | None:
    """The newest intact checkpoint in ``folder`` and its contents (``read(path)``); None when
    there is none.

    Damaged newer ones are skipped, said in one stderr line when ``announce``; when every
    checkpoint is damaged this is a one-line :class:`~cxraug.core.errors.CxraugError` (resuming from
    step 0 would silently throw the training away)."""
    skipped = []
    for path in sorted(Path(folder).glob("step_*"), reverse=True):
        try:
            files = read(path)
        except DamagedCheckpoint as e:
            skipped.append(f"{path.name} ({e})")
            continue
        if skipped and announce:
            print(f"warning: {folder}: skipped damaged checkpoint {', '.join(skipped)}; resuming "
                  f"from {path.name}", file=sys.stderr, flush=True)
        return path, files
    if skipped:
        raise CxraugError(f"{folder}: no intact checkpoint to resume from ({'; '.join(skipped)}); "
                          "copy the checkpoints again, or delete that folder to start this stage "
                          "from step 0")
    return None


def _tensors(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


@dataclass
class TrainState:
    """What one loop's checkpoints save and restore.

    ``model``: the trained module (only the entries of its state dict that ``keys`` accepts are
    saved, so frozen weights stay out); ``ema``/``lr_sched``: optional; ``generators``: named
    generators whose state a step depends on; ``order``: an :class:`EpochReplay`;
    ``global_rng``: also torch's global generators (dropout, or sampling on a GPU); ``extra``:
    JSON values of the loop's own (recent losses) saved in ``state.json`` and read back into it;
    ``tensors``: tensors of the loop's own (the best weights so far) saved in
    ``extra.safetensors`` and read back into it.
    """

    model: torch.nn.Module
    opt: Any
    ema: AveragedModel | None = None
    lr_sched: Any = None
    generators: dict[str, torch.Generator] = field(default_factory=dict)
    order: EpochReplay | None = None
    global_rng: bool = False
    keys: Callable[[str], bool] | None = None
    extra: dict = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def _rng(self) -> bool:
        return bool(self.generators) or self.order is not None or self.global_rng

    def _model_state(self) -> dict[str, torch.Tensor]:
        sd = self.model.state_dict()
        return {k: v for k, v in sd.items() if self.keys is None or self.keys(k)}

    def save(self, folder: str | Path, step: int, keep: int) -> Path:
        """Write the state after ``step`` steps; keep the newest ``keep`` checkpoints. A failed
        write (a full disk) names the checkpoint and leaves the last complete one in place."""
        folder = Path(folder)
        final, tmp = folder / f"step_{step:08d}", folder / f".tmp_step_{step:08d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            with writing(tmp):
                self._write(tmp, step)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(folder.glob("step_*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _write(self, tmp: Path, step: int) -> None:
        """The checkpoint's files: weights, EMA, optimiser, generator states, ``state.json``."""
        save_file(_tensors(self._model_state()), str(tmp / "model.safetensors"))
        state: dict[str, Any] = {"step": step}
        if self.ema is not None:
            save_file(_tensors(self.ema.module.state_dict()), str(tmp / "ema.safetensors"))
            state["n_averaged"] = int(self.ema.n_averaged)
        if self.lr_sched is not None:
            state["lr_sched"] = self.lr_sched.state_dict()
        torch.save(self.opt.state_dict(), tmp / "optimizer.pt")
        if self._rng:
            save_file(self._rng_state(state), str(tmp / "rng.safetensors"))
        if self.extra:
            state["extra"] = self.extra
        if self.tensors:
            save_file(_tensors(self.tensors), str(tmp / "extra.safetensors"))
            state["tensors"] = True
        (tmp / "state.json").write_text(json.dumps(state))

    def _rng_state(self, state: dict) -> dict[str, torch.Tensor]:
        out = {f"generator.{name}": g.get_state() for name, g in self.generators.items()}
        if self.order is not None:
            start, state["order_taken"] = self.order.state()
            if start is not None:
                out["order.start"] = start
        if self.global_rng:
            out["torch"] = torch.get_rng_state()
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                out.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        return out

    def read(self, path: Path) -> dict:
        keys = (("n_averaged",) if self.ema is not None else ()) + \
            (("lr_sched",) if self.lr_sched is not None else ()) + \
            (("order_taken",) if self.order is not None else ()) + (("extra",) if self.extra else ())
        files = read_checkpoint(path, ema=self.ema is not None, rng=self._rng, state_keys=keys)
        if files["state.json"].get("tensors"):
            files["extra.safetensors"] = _weights(path, "extra.safetensors")
        return files

    def load(self, path: Path, files: dict | None = None) -> int:
        """Apply a checkpoint (``files`` from :meth:`read`, read here when not given); its step."""
        files = files or self.read(path)
        sd, expected = files["model.safetensors"], set(self._model_state())
        if set(sd) != expected:
            missing, unexpected = sorted(expected - set(sd))[:3], sorted(set(sd) - expected)[:3]
            raise CxraugError(f"{path}: this checkpoint does not fit the model being trained (missing "
                              f"{missing}, unexpected {unexpected}); delete {path.parent} to start "
                              "this training from step 0")
        self.model.load_state_dict(sd, strict=False)
        state = files["state.json"]
        if self.ema is not None:
            self.ema.module.load_state_dict(files["ema.safetensors"])
            self.ema.n_averaged.fill_(state["n_averaged"])
        self.opt.load_state_dict(files["optimizer.pt"])
        if self.lr_sched is not None:
            self.lr_sched.load_state_dict(state["lr_sched"])
        if self._rng:
            self._load_rng(files["rng.safetensors"], state)
        if self.extra:
            self.extra.update(state["extra"])
        self.tensors.clear()
        self.tensors.update(files.get("extra.safetensors", {}))
        return int(state["step"])

    def _load_rng(self, rng: dict[str, torch.Tensor], state: dict) -> None:
        if self.order is not None:  # first: rebuilding the epoch draws from its generator
            self.order.restore(rng.get("order.start"), int(state["order_taken"]))
        for name, g in self.generators.items():
            g.set_state(rng[f"generator.{name}"])
        if self.global_rng:
            torch.set_rng_state(rng["torch"])
            cuda = [rng[k] for k in sorted(rng) if k.startswith("cuda.")]
            if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)

    def resume(self, folder: str | Path, announce: bool = True) -> int:
        """Load the newest intact checkpoint in ``folder``; the step it ends (0 without one)."""
        folder = Path(folder)
        found = resumable_checkpoint(folder, announce, self.read) if folder.is_dir() else None
        return 0 if found is None else self.load(*found)


# ---------------------------------------------------------- the denoiser's format, by function


def save_checkpoint(folder: Path, step: int, model, ema: AveragedModel, opt, lr_sched,
                    keep: int) -> None:
    """A checkpoint with weights, EMA, optimiser and scheduler (the denoiser's format)."""
    TrainState(model, opt, ema, lr_sched).save(folder, step, keep)


def load_checkpoint(path: Path, model, ema: AveragedModel, opt, lr_sched,
                    files: dict | None = None) -> int:
    """Apply a checkpoint of :func:`save_checkpoint` (``files`` from :func:`read_checkpoint`)."""
    return TrainState(model, opt, ema, lr_sched).load(path, files)
