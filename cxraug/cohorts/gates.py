"""Quality gates for synthetic images: label fidelity and memorisation.

Both gates are calibrated on real images the generator never trained on (the run's ``val``
split; a generator trained on a real subset, as in the bench's strict protocol, calibrates the
memorisation gate leave-one-patient-out on that subset instead, since its user has no other real
images), so a threshold means "as good as / as far from the training data as real images are":

* **fidelity**: a classifier trained on real data only scores each image. Per label, the
  positive threshold is the score quantile that keeps ``recall`` of the real val positives
  (``recall=0.8``: 80% of real positives would pass); the negative threshold keeps
  ``negative_keep`` of the real val negatives. An image planned with target label ``A`` is
  rejected when ``score(A)`` is below A's positive threshold; an explicit negative is rejected
  when any requested label scores above its negative threshold.
* **memorisation**: each image's nearest training images by embedding cosine similarity
  (the classifier's penultimate features, or a small mean-centred pixel thumbnail without a
  classifier) are compared by SSIM; the image is rejected when its best SSIM is above the
  ``1 - alpha`` quantile of the same statistic for real val images against the training set,
  i.e. it is closer to a training image than almost any real unseen image is.

Each gate returns one record per image; the records are manifest columns.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from cxraug.classify.model import Classifier
from cxraug.cohorts.config import GATES, GateConfig
from cxraug.cohorts.store import CohortDir, write_atomic
from cxraug.core.errors import CxraugError
from cxraug.data import labels as L
from cxraug.data.reference import downsample

if TYPE_CHECKING:
    from cxraug.cohorts.generator import LoadedGenerator

PASS, FAIL, NOT_RUN = "pass", "fail", "not run"


def parse_gates(text: str) -> tuple[str, ...]:
    """``"fidelity,memorisation"`` / ``"none"`` -> gate names (British or US spelling)."""
    names = [t.strip().lower().replace("memorization", "memorisation") for t in text.split(",")]
    names = [n for n in names if n]
    if names == ["none"]:
        return ()
    bad = [n for n in names if n not in GATES]
    if bad or not names:
        raise CxraugError(f"--gates {text!r}: choose from {', '.join(GATES)} (comma-separated) or none")
    return tuple(g for g in GATES if g in names)


# ------------------------------------------------------------------------------- fidelity

@dataclasses.dataclass
class FidelityGate:
    """Per-label thresholds on a real-data classifier's probabilities.

    ``positive[label]``: minimum score of an image planned with that target;
    ``negative[label]``: maximum score of a requested label on an explicit negative.
    """

    classifier: torch.nn.Module
    requested: list[str]
    positive: dict[str, float]
    negative: dict[str, float]

    @classmethod
    def calibrate(cls, classifier, requested: Sequence[str], images: np.ndarray, labels: np.ndarray,
                  cfg: GateConfig) -> FidelityGate:
        """Fit thresholds on real val ``images`` (``uint8 [V, H, W]``) with raw ``labels [V, 14]``."""
        requested = [L.canonical(x) for x in requested]
        missing = [x for x in requested if x not in classifier.label_names]
        if missing:
            raise CxraugError(f"--classifier predicts {', '.join(classifier.label_names)} but not "
                              f"{missing[0].lower()}; use a classifier trained on every requested "
                              "label or drop the fidelity gate (--gates memorisation)")
        scores = classifier.predict_proba(np.asarray(images))
        pos, neg = {}, {}
        for name in requested:
            s, y = scores[:, classifier.label_names.index(name)], labels[:, L.index(name)]
            for kind, value in (("positive", L.POSITIVE), ("negative", L.NEGATIVE)):
                if not (y == value).any() and not (kind == "positive" and name in cfg.thresholds):
                    raise CxraugError(f"fidelity gate: the run's val split has no real {kind} "
                                      f"{name.lower()} image to fit a threshold on; set one with "
                                      f"--set gate.thresholds={{{name.lower()}: 0.5}} or drop the "
                                      "gate (--gates memorisation)")
            pos[name] = (cfg.thresholds[name] if name in cfg.thresholds else
                         float(np.quantile(s[y == L.POSITIVE], 1 - cfg.recall, method="lower")))
            neg[name] = float(np.quantile(s[y == L.NEGATIVE], cfg.negative_keep, method="higher"))
        return cls(classifier, requested, pos, neg)

    def thresholds(self) -> dict[str, dict[str, float]]:
        return {x: {"positive": self.positive[x], "negative": self.negative[x]} for x in self.requested}

    @classmethod
    def from_thresholds(cls, classifier, saved: dict[str, dict[str, float]]) -> FidelityGate:
        names = list(saved)
        return cls(classifier, names, {x: saved[x]["positive"] for x in names},
                   {x: saved[x]["negative"] for x in names})

    def check(self, images: np.ndarray, targets: Sequence[str]) -> list[dict]:
        """``uint8 [B, H, W]`` + plan targets (a requested label, lower case, or ``"negative"``)
        -> one record per image: the label checked, its score, the threshold and pass/fail."""
        scores = self.classifier.predict_proba(images)
        col = {x: self.classifier.label_names.index(x) for x in self.requested}
        out = []
        for s, target in zip(scores, targets):
            if target == "negative":
                # the requested label that looks most present, against its own threshold
                margin = {x: s[col[x]] - self.negative[x] for x in self.requested}
                name = max(margin, key=margin.get)
                ok, thr = margin[name] <= 0, self.negative[name]
                checked = f"not {name.lower()}"
            else:
                name = L.canonical(target)
                thr = self.positive[name]
                ok, checked = bool(s[col[name]] >= thr), name.lower()
            # 4 decimals: the last float digits of a CNN can depend on the batch it ran in
            out.append({"fidelity": PASS if ok else FAIL, "fidelity_label": checked,
                        "fidelity_score": round(float(s[col[name]]), 4),
                        "fidelity_threshold": round(thr, 4)})
        return out


# ---------------------------------------------------------------------------- memorisation

def pixel_embedding(size: int = 16) -> Callable[[np.ndarray], np.ndarray]:
    """``uint8 [B, H, W]`` -> mean-centred, area-downsampled thumbnails ``float32 [B, size**2]``
    (their cosine similarity is the correlation of the thumbnails)."""
    def embed(images: np.ndarray) -> np.ndarray:
        x = torch.tensor(np.asarray(images), dtype=torch.float32)[:, None] / 255.0
        x = F.adaptive_avg_pool2d(x, size).flatten(1)
        return (x - x.mean(dim=1, keepdim=True)).numpy()
    return embed


def _normalise(e: np.ndarray) -> np.ndarray:
    # float64: a float32 matrix product's last digits depend on the batch shape
    e = np.asarray(e, dtype=np.float64)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two ``uint8 [H, W]`` images (skimage, 7-pixel window or the image if smaller)."""
    from skimage.metrics import structural_similarity

    win = min(7, *a.shape)
    win -= 1 - win % 2  # skimage needs an odd window no larger than the image
    return float(structural_similarity(a, b, data_range=255, win_size=win))


class MemorisationGate:
    """Nearest training images by embedding, then SSIM on the ``top_k`` of them.

    ``reference``: the generator's training images ``uint8 [M, H, W]`` (a memmap is fine, only
    the top-k are read per image); ``ids``: their ids; ``embed``: images -> ``[B, D]``.
    """

    def __init__(self, reference: np.ndarray, ids: Sequence[str], embed: Callable, embedding: str,
                 cfg: GateConfig, threshold: float = float("nan")):
        self.reference, self.ids, self.embed = reference, list(ids), embed
        self.embedding, self.cfg, self.threshold = embedding, cfg, threshold
        bs = cfg.batch_size
        self.ref_emb = np.concatenate([_normalise(embed(np.asarray(reference[i:i + bs])))
                                       for i in range(0, len(reference), bs)])

    def nearest(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``uint8 [B, H, W]`` -> (nearest training row by SSIM ``[B]``, its cosine ``[B]``,
        the best SSIM ``[B]``) among the ``top_k`` by cosine. Images larger than the reference by
        a whole factor (a packaged model's downsampled reference) are area-downsampled to it."""
        side = self.reference.shape[-1]
        if images.shape[-1] != side and images.shape[-1] % side == 0 and images.shape[-1] == images.shape[-2]:

            images = downsample(images, side)
        if images.shape[1:] != self.reference.shape[1:]:
            raise CxraugError(f"memorisation gate: images {images.shape[1:]} differ in size from the "
                              f"training images {self.reference.shape[1:]}")
        sims = _normalise(self.embed(images)) @ self.ref_emb.T  # [B, M]
        k = min(self.cfg.top_k, sims.shape[1])
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        rows, cos, best = [], [], []
        for b, cand in enumerate(top):
            s = [ssim(images[b], np.asarray(self.reference[j])) for j in cand]
            j = int(np.argmax(s))
            rows.append(int(cand[j]))
            cos.append(float(sims[b, cand[j]]))
            best.append(s[j])
        return np.array(rows), np.array(cos), np.array(best)

    def calibrate(self, val_images: np.ndarray) -> dict:
        """Set the threshold from real val images ``uint8 [V, H, W]``; returns a summary."""
        if len(val_images) == 0:
            raise CxraugError("memorisation gate: the run's val split is empty; nothing to "
                              "calibrate on (drop the gate with --gates fidelity or none)")
        best = np.concatenate([self.nearest(np.asarray(val_images[i:i + 64]))[2]
                               for i in range(0, len(val_images), 64)])
        self.threshold = float(np.quantile(best, 1 - self.cfg.alpha, method="higher"))
        return {"threshold": self.threshold, "n_val": len(best),
                "val_ssim_median": float(np.median(best)), "val_ssim_max": float(best.max())}

    def calibrate_within(self, patient_ids: np.ndarray) -> dict:
        """Set the threshold leave-one-patient-out on the training images themselves: each
        image's best SSIM among the ``top_k`` (by cosine) training images of *other* patients.
        For a generator trained on a real subset (the bench's strict protocol), whose user has no
        other real images to calibrate on."""
        pids = np.asarray(patient_ids).astype(str)
        if len(set(pids)) < 2:
            raise CxraugError("memorisation gate: the generator's training images come from one "
                              "patient; nothing to calibrate on (use --gates none)")
        sims = self.ref_emb @ self.ref_emb.T
        sims[pids[:, None] == pids[None, :]] = -np.inf
        k = min(self.cfg.top_k, int((pids[:, None] != pids[None, :]).sum(axis=1).min()))
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        best = np.array([max(ssim(np.asarray(self.reference[i]), np.asarray(self.reference[j])) for j in cand)
                         for i, cand in enumerate(top)])
        self.threshold = float(np.quantile(best, 1 - self.cfg.alpha, method="higher"))
        return {"threshold": self.threshold, "n_val": 0, "calibrated_on": "training images, "
                "leave-one-patient-out", "n_calibration": len(best),
                "val_ssim_median": float(np.median(best)), "val_ssim_max": float(best.max())}

    def check(self, images: np.ndarray) -> list[dict]:
        rows, cos, best = self.nearest(images)
        return [{"memorisation": PASS if s <= self.threshold else FAIL, "nn_id": self.ids[r],
                 "nn_cosine": round(float(c), 6), "nn_ssim": round(float(s), 6),
                 "memorisation_threshold": round(self.threshold, 6)}
                for r, c, s in zip(rows, cos, best)]


# ------------------------------------------------------------------------------- combined

#: Manifest columns written by the gates, in order (empty when a gate did not run).
COLUMNS = ("fidelity", "fidelity_label", "fidelity_score", "fidelity_threshold",
           "memorisation", "nn_id", "nn_cosine", "nn_ssim", "memorisation_threshold")


class Gates:
    """The gates of one cohort; :meth:`check` gives every image its gate columns, ``accepted``
    and ``reason`` (failed gates joined by ``;``)."""

    def __init__(self, fidelity: FidelityGate | None = None,
                 memorisation: MemorisationGate | None = None):
        self.fidelity, self.memorisation = fidelity, memorisation

    def check(self, images: np.ndarray, targets: Sequence[str]) -> list[dict]:
        n = len(images)
        fid = self.fidelity.check(images, targets) if self.fidelity else [{"fidelity": NOT_RUN}] * n
        mem = self.memorisation.check(images) if self.memorisation else [{"memorisation": NOT_RUN}] * n
        out = []
        for f, m in zip(fid, mem):
            rec = {c: "" for c in COLUMNS} | f | m
            failed = [g for g in GATES if rec[g] == FAIL]
            out.append(rec | {"accepted": not failed, "reason": ";".join(failed)})
        return out


# ------------------------------------------------------------------------ a cohort's gates

def build_gates(gates: Sequence[str], settings: GateConfig, labels: list[str], classifier: str | None,
                gen: LoadedGenerator, out: CohortDir | None, train_ds) -> tuple[Gates, dict]:
    """Load the classifier, read real train/val images and calibrate (or reload) the ``gates``
    (names from :data:`GATES`) for the requested ``labels``; ``classifier``: the real-data
    classifier folder of the fidelity gate (and the embeddings), if any."""
    info: dict = {g: {"status": "not run"} for g in GATES}
    if not gates:
        return Gates(), info
    saved = json.loads(out.gates.read_text()) if out is not None and out.gates.is_file() else None
    clf = _gate_classifier(classifier)
    # A generator trained on a real subset (the bench's strict protocol) calibrates on that
    # subset alone: its user has no other real images.
    subset = gen.cfg.data.real_frac < 1
    if saved is None and subset and "fidelity" in gates and clf is not None:
        raise CxraugError("fidelity gate: this generator was trained on a real subset "
                          f"(data.real_frac={gen.cfg.data.real_frac:g}); its thresholds would be "
                          "calibrated on real images outside it. Use --gates memorisation")
    if saved is None and not subset:  # calibrate on the real val split of the generator's data
        val_images, val_ds = gen.images(gen.split("val"))
    fid = mem = None
    if "fidelity" in gates and clf is None:
        info["fidelity"] = {"status": "not run", "why": "no --classifier given"}
    elif "fidelity" in gates and saved is not None:
        fid = FidelityGate.from_thresholds(clf, saved["fidelity"]["thresholds"])
    elif "fidelity" in gates:
        fid = FidelityGate.calibrate(clf, labels, val_images, val_ds.labels, settings)
        info["fidelity"] = {"status": "run", "classifier": str(Path(classifier).resolve()),
                            "recall": settings.recall, "negative_keep": settings.negative_keep,
                            "n_val": len(val_ds), "thresholds": fid.thresholds()}
    if "memorisation" in gates:
        ref, kept = gen.images(train_ds)
        embed, name = ((clf.embed, f"classifier {clf.args['arch']} features") if clf is not None
                       else (pixel_embedding(settings.pixel_embed),
                             f"pixels {settings.pixel_embed}x{settings.pixel_embed}"))
        mem = MemorisationGate(ref, kept.ids, embed, name, settings)
        if saved is not None:
            mem.threshold = saved["memorisation"]["threshold"]
        else:
            info["memorisation"] = {"status": "run", "embedding": name, "alpha": settings.alpha,
                                    "top_k": settings.top_k, "n_reference": len(kept),
                                    **(mem.calibrate_within(kept.patient_ids) if subset
                                       else mem.calibrate(val_images))}
    if saved is not None:
        return Gates(fid, mem), saved
    if out is not None:
        write_atomic(out.gates, json.dumps(info, indent=2) + "\n")
    return Gates(fid, mem), info


def _gate_classifier(folder: str | None):
    """The real-data classifier of the fidelity gate (and of the embeddings), if one is given."""

    if not folder:
        return None
    if not (Path(folder) / "config.json").is_file():
        raise CxraugError(f"--classifier {folder}: not a classifier folder (no "
                          "config.json); train one on real data first")
    return Classifier.from_pretrained(folder).eval()
