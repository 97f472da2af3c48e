"""Generative metrics for synthetic chest X-rays: FID, KID, precision/recall, density/coverage
and SSIM diversity, plus the ``cxraug eval`` pipeline that computes them into an eval card.

Feature metrics take ``float [N, F]`` feature arrays from one extractor:

* ``classifier``: a cxraug :class:`~cxraug.classify.model.Classifier` folder (penultimate
  features) - the offline chest X-ray extractor;
* ``inception``: torch-fidelity's InceptionV3 pool3 (2048-d) from a LOCAL weights file;
  grayscale is repeated to RGB only at that boundary. cxraug never downloads weights.
* ``xrv``: a torchxrayvision DenseNet-121 (e.g. ``densenet121-res224-all``, trained on eight chest
  X-ray datasets), pooled 1024-d features at 224 px in xrv's [-1024, 1024] range, from a LOCAL
  safetensors state dict. torchxrayvision publishes pickled ``.pt`` models, and cxraug never
  unpickles: convert one once where you trust it (the error message prints the command).
* ``pixels``: area-downsampled 16x16 thumbnails, each standardised (256-d); needs no weights, so
  a card can be computed on a fresh install. Weak (it sees layout and texture, not anatomy or
  pathology): for smoke tests and relative comparisons only.

Every card also carries a real-vs-real floor (the same metrics between two disjoint real sets
sized like the synthetic comparison) and a classifier two-sample test (C2ST: cross-validated AUC
of telling the two sets apart; 0.5 = indistinguishable), so a score reads against what real data
scores against itself.

References: FID (Heusel et al. 2017), KID (Binkowski et al. 2018), precision/recall
(Kynkaanniemi et al. 2019), density/coverage (Naeem et al. 2020), C2ST (Lopez-Paz & Oquab 2017).
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from cxraug.core.errors import CxraugError, DataError, WeightsError
from cxraug.data import labels as L

EXTRACTORS = ("classifier", "inception", "xrv", "pixels")
PIXELS_SIZE = 16  # the pixels extractor's thumbnail side: 16 x 16 = 256 features
C2ST_FOLDS = 5
METRIC_KEYS = ("fid", "kid_mean", "kid_std", "precision", "recall", "density", "coverage")
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE)
NEGATIVE = "negative"


# ------------------------------------------------------------------------------ feature metrics

def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``||mu1 - mu2||^2 + Tr(s1 + s2 - 2 sqrt(s1 s2))``."""
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular with fewer samples than features; handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = np.atleast_2d(linalg.sqrtm(sigma1 @ sigma2))
    if not np.isfinite(covmean).all():
        # singular product (fewer samples than features): regularise as pytorch-fid does
        offset = np.eye(len(mu1)) * eps
        covmean = np.atleast_2d(linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset)))
    # sqrtm of a product of PSD matrices is real in theory; numerical noise leaves small imaginary parts
    covmean = np.real(covmean)
    return float(max(0.0, diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)))


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between feature sets ``[N, F]`` and ``[M, F]`` (Gaussian fits; N, M >= 2)."""
    a, b = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    return frechet_distance(a.mean(0), np.atleast_2d(np.cov(a, rowvar=False)),
                            b.mean(0), np.atleast_2d(np.cov(b, rowvar=False)))


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the kernel ``(x.y / F + 1)^3`` over random subsets -> (mean, std)."""
    a, b = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise DataError(f"KID needs at least 2 images per side, got {len(a)} real and {len(b)} synthetic")
    rng = np.random.default_rng(seed)
    d = a.shape[1]
    vals = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        off = m * (m - 1)
        vals.append((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off
                    - 2 * kxy.mean())
    return float(np.mean(vals)), float(np.std(vals))


def _kth_radius(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row of ``x`` to its k-th nearest other row."""
    d = torch.cdist(torch.from_numpy(x), torch.from_numpy(x))
    return d.kthvalue(k + 1, dim=1).values.numpy()  # +1: the point itself sits at distance 0


def manifold_metrics(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """Precision/recall (Kynkaanniemi et al. 2019) and density/coverage (Naeem et al. 2020)
    with k-NN balls; both sets need more than ``k`` rows."""
    a, b = np.asarray(real, np.float32), np.asarray(fake, np.float32)
    if min(len(a), len(b)) <= k:
        raise DataError(f"precision/recall with k={k} need more than {k} images per side, got "
                        f"{len(a)} real and {len(b)} synthetic")
    ra, rb = _kth_radius(a, k), _kth_radius(b, k)
    d = torch.cdist(torch.from_numpy(a), torch.from_numpy(b)).numpy()  # [N_real, N_fake]
    inside_real = d <= ra[:, None]  # fake j inside real i's ball
    return {
        "precision": float(inside_real.any(0).mean()),
        "recall": float((d <= rb[None, :]).any(1).mean()),
        "density": float(inside_real.sum(0).mean() / k),
        "coverage": float((d.min(1) <= ra).mean()),
    }


def feature_metrics(real: np.ndarray, fake: np.ndarray, k: int = 3, seed: int = 0,
                    kid_subsets: int = 100, kid_subset_size: int = 1000) -> dict[str, float]:
    """All feature metrics of one real/synthetic pair of feature sets."""
    kmean, kstd = kid(real, fake, kid_subsets, kid_subset_size, seed)
    return {"fid": fid(real, fake), "kid_mean": kmean, "kid_std": kstd, **manifold_metrics(real, fake, k)}


def two_sample_auc(a: np.ndarray, b: np.ndarray, folds: int = C2ST_FOLDS, seed: int = 0) -> dict:
    """Classifier two-sample test: how well a logistic regression on standardised features tells
    rows of ``a`` from rows of ``b``, as the ROC AUC over stratified k-fold held-out predictions
    (mean and std over folds). 0.5 = indistinguishable, 1 = fully separable. The larger side is
    subsampled to the smaller (seeded), so both classes weigh the same in training."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = min(len(a), len(b))
    if n < folds:
        raise DataError(f"the two-sample test ({folds}-fold) needs at least {folds} images per side, "
                        f"got {len(a)} and {len(b)}")
    rng = np.random.default_rng([seed, 3])
    a, b = (x[_subsample(len(x), n, rng)] for x in (a, b))
    x, y = np.concatenate([a, b]), np.repeat([0, 1], n)
    aucs = []
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        with warnings.catch_warnings():  # an unconverged fit still gives a valid held-out AUC
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x[train], y[train])
        aucs.append(roc_auc_score(y[test], model.predict_proba(x[test])[:, 1]))
    return {"auc": float(np.mean(aucs)), "auc_std": float(np.std(aucs)), "n_per_side": int(n),
            "folds": folds, "model": "standardised features -> LogisticRegression", "seed": seed}


def ssim_diversity(images: np.ndarray, groups: np.ndarray, pairs: int = 50,
                   seed: int = 0) -> dict[str, object]:
    """Mean SSIM over seeded random pairs within each group (same target/prompt) of ``uint8
    [N, H, W]`` images. Higher = more alike; lower = more diverse. Groups of < 2 are skipped."""
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(seed)
    per_group, everything = {}, []
    for g in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == g)
        if len(idx) < 2:
            continue
        vals = []
        for _ in range(pairs):
            i, j = rng.choice(idx, 2, replace=False)
            vals.append(structural_similarity(images[i], images[j], data_range=255))
        per_group[str(g)] = float(np.mean(vals))
        everything += vals
    return {"mean_pairwise_ssim": float(np.mean(everything)) if everything else None,
            "pairs_per_group": pairs, "per_group": per_group}


# ------------------------------------------------------------------------------ extractors

def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_extractor(name: str, classifier: Path | None = None, inception_weights: Path | None = None,
                   batch_size: int = 64, xrv_weights: Path | None = None) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """``uint8 [N, H, W]`` -> ``float32 [N, F]`` feature function, and its description for the card."""
    if name == "classifier":
        from cxraug.classify.model import Classifier

        if classifier is None or not (Path(classifier) / "config.json").is_file():
            raise WeightsError(f"--classifier {classifier}: expected a Classifier folder with config.json "
                               "(from cxraug train classifier / Classifier.save_pretrained)")
        model = Classifier.from_pretrained(classifier).eval()
        weights = Path(classifier) / "model.safetensors"
        return (lambda x: model.embed(x, batch_size)), {
            "name": "classifier", "path": str(Path(classifier).resolve()), "arch": model.args["arch"],
            "features": model.num_features, "input_size": model.image_size,
            "sha256": sha256(weights) if weights.is_file() else None}
    if name == "inception":
        return _inception(inception_weights, batch_size)
    if name == "xrv":
        return _xrv(xrv_weights, batch_size)
    if name == "pixels":
        return _pixels(batch_size)
    raise CxraugError(f"--extractor {name!r}: choose one of {', '.join(EXTRACTORS)}")


def _pixels(batch_size: int):
    """Weights-free extractor: each image area-downsampled to a 16x16 thumbnail and standardised
    to zero mean and unit std (so brightness and contrast drop out), flattened to 256 features.
    It needs nothing but the images, which makes it the fresh-install and smoke-test extractor;
    it knows nothing of anatomy or pathology, so compare its scores only with each other."""
    import torch.nn.functional as F

    def run(images: np.ndarray) -> np.ndarray:
        out = []
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[s:s + batch_size])).float().unsqueeze(1)
            t = F.interpolate(x, size=(PIXELS_SIZE, PIXELS_SIZE), mode="area").flatten(1)
            t = t - t.mean(1, keepdim=True)
            out.append((t / t.std(1, unbiased=False, keepdim=True).clamp_min(1e-6)).numpy())
        return np.concatenate(out).astype(np.float32)

    return run, {"name": "pixels", "path": None, "sha256": None, "features": PIXELS_SIZE ** 2,
                 "input_size": PIXELS_SIZE, "layer": "area-downsampled thumbnail, per-image standardised",
                 "note": "weak extractor: smoke tests and relative comparisons only"}


XRV_CONVERT = ("python -c \"import torchxrayvision as xrv, safetensors.torch as st; st.save_file("
               "xrv.models.DenseNet(weights='densenet121-res224-all').state_dict(), 'OUT.safetensors')\"")


def _xrv(path: Path | None, batch_size: int):
    import torch.nn.functional as F
    import torchxrayvision as xrv
    from safetensors.torch import load_file

    from cxraug.data.transforms import uint8_to_xrv

    where = ("export a torchxrayvision DenseNet once, on a machine with internet, with torchxrayvision's own "
             f"loader: {XRV_CONVERT}; then pass --xrv-weights OUT.safetensors")
    if path is None or not Path(path).is_file():
        raise WeightsError(f"--xrv-weights {path}: file not found; {where}")
    if Path(path).suffix != ".safetensors":
        raise WeightsError(f"--xrv-weights {path}: cxraug only reads safetensors (xrv's .pt files are "
                           f"pickled models and are never unpickled); {where}")
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(f"--xrv-weights {path}: unreadable safetensors ({str(e).splitlines()[0]})") from None
    state.pop("op_threshs", None)
    if "classifier.weight" not in state or "features.conv0.weight" not in state:
        raise WeightsError(f"--xrv-weights {path}: not a torchxrayvision DenseNet state dict; {where}")
    net = xrv.models.DenseNet(weights=None, num_classes=int(state["classifier.weight"].shape[0]))
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise WeightsError(f"--xrv-weights {path}: {str(e).splitlines()[0]}; {where}") from None
    net.eval()

    def run(images: np.ndarray) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for s in range(0, len(images), batch_size):
                x = uint8_to_xrv(np.ascontiguousarray(images[s:s + batch_size]))  # [b, 1, h, w]
                if x.shape[-1] != 224:
                    x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
                out.append(net.features2(x).float().numpy())
        return np.concatenate(out)

    return run, {"name": "xrv", "path": str(Path(path).resolve()), "sha256": sha256(Path(path)),
                 "features": 1024, "input_size": 224, "layer": "densenet121 pooled features",
                 "range": "[-1024, 1024]"}


def _inception(path: Path | None, batch_size: int):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from cxraug.data.transforms import gray_to_rgb

    where = f"download {INCEPTION_URL} yourself and pass --inception-weights FILE (cxraug never downloads)"
    if path is None or not Path(path).is_file():
        raise WeightsError(f"--inception-weights {path}: file not found; {where}")
    try:  # safe load first: only if it is a plain tensor state dict is it handed to torch-fidelity
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise WeightsError(f"--inception-weights {path}: not a loadable state dict ({str(e).splitlines()[0]}); "
                           f"{where}") from None
    if not isinstance(state, dict) or "Mixed_7c.branch1x1.conv.weight" not in state:
        raise WeightsError(f"--inception-weights {path}: not torch-fidelity InceptionV3 weights; {where}")
    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                          feature_extractor_weights_path=str(path))
    except RuntimeError as e:
        raise WeightsError(f"--inception-weights {path}: {str(e).splitlines()[0]}; {where}") from None

    def run(images: np.ndarray) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for s in range(0, len(images), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[s:s + batch_size])).unsqueeze(1)
                out.append(net(gray_to_rgb(x).contiguous())[0].float().numpy())  # resized to 299 inside
        return np.concatenate(out)

    return run, {"name": "inception", "path": str(Path(path).resolve()), "sha256": sha256(Path(path)),
                 "features": 2048, "input_size": 299, "layer": "pool3"}


# ------------------------------------------------------------------------------ inputs

def _subsample(n: int, max_images: int | None, rng: np.random.Generator) -> np.ndarray:
    if max_images is None or n <= max_images:
        return np.arange(n)
    return np.sort(rng.choice(n, max_images, replace=False))


def load_real(data: str | Path, image_size: int, max_images: int | None, seed: int,
              kind: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Any dataset cxraug loads -> (``uint8 [N, S, S]`` images, raw labels ``[N, 14]``)."""
    from cxraug.data.adapters import load_dataset, resolve_data
    from cxraug.data.transforms import load_grayscale, resize_square

    ds = load_dataset(resolve_data(data), kind)
    keep = _subsample(len(ds), max_images, np.random.default_rng([seed, 1]))
    paths = [ds.paths[i] for i in keep]
    images = np.stack([resize_square(load_grayscale(p), image_size) for p in paths])
    return images, ds.labels[keep]


def load_synth(folder: Path, image_size: int, max_images: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``cxraug synth`` cohort (accepted rows of manifest.csv) or a plain image folder ->
    (``uint8 [M, S, S]`` images, target per image; ``"all"`` for a plain folder)."""
    from cxraug.data.adapters import IMAGE_SUFFIXES, read_csv
    from cxraug.data.transforms import load_grayscale, resize_square

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--synth {folder}: folder not found")
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        df = read_csv(manifest, ("file", "accepted", "target"), "cohort manifest from cxraug synth")
        df = df[df["accepted"].str.strip().str.lower().isin(["true", "1", "1.0"])]
        if df.empty:
            raise DataError(f"{manifest}: no accepted images")
        files, targets = [folder / f for f in df["file"]], df["target"].to_numpy(dtype=str)
    else:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"--synth {folder}: no manifest.csv and no image files")
        targets = np.array(["all"] * len(files))
    keep = _subsample(len(files), max_images, np.random.default_rng([seed, 2]))
    images = np.stack([resize_square(load_grayscale(files[i]), image_size) for i in keep])
    return images, targets[keep]


def floor_split(n_real: int, n_synth: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint random split of ``n_real`` real images for the real-vs-real floor, as sorted
    indices ``(reference, compared)``: ``compared`` stands in for the synthetic set and gets as
    many images as it has (at most half the real ones), ``reference`` stands in for the real side
    and gets the rest, so the floor's n is as close to the synthetic comparison's as the data allows."""
    n_cmp = min(n_synth, n_real // 2)
    order = np.random.default_rng([seed, 4]).permutation(n_real)
    return np.sort(order[n_cmp:]), np.sort(order[:n_cmp])


def _not_in(images: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Mask of ``images`` that are not pixel-identical (at the eval size) to any of ``other``:
    a --real-ref that shares images with --real would put the floor too low."""
    seen = {hashlib.sha1(x.tobytes()).digest() for x in other}
    return np.array([hashlib.sha1(x.tobytes()).digest() not in seen for x in images], dtype=bool)


def _canonical_target(target: str) -> str:
    """A cohort target as the label contract spells it; ``negative``/``all``/unknown unchanged."""
    if target in ("all", NEGATIVE):
        return target
    try:
        return L.canonical(target)
    except L.UnknownLabelError:
        return target


def real_mask(raw: np.ndarray, target: str) -> np.ndarray:
    """Real images matching a cohort target: positive for it, or for ``negative`` no positive
    finding and at least one explicit negative (or No Finding = 1)."""
    if target.lower() == NEGATIVE:
        findings = np.delete(raw, L.index("No Finding"), axis=1)
        return ((raw[:, L.index("No Finding")] == 1)
                | (~(findings == 1).any(1) & (findings == 0).any(1)))
    return raw[:, L.index(L.canonical(target))] == 1


# ------------------------------------------------------------------------------ the eval card

def _wanted(labels: str | list[str] | None) -> set[str] | None:
    """``--labels``: observation names (aliases allowed) and/or ``negative``; None = all."""
    if not labels:
        return None
    items = [x.strip() for x in (labels.split(",") if isinstance(labels, str) else labels) if x.strip()]
    names = [x for x in items if x.lower() != NEGATIVE]
    return (set(L.parse_label_list(names)) if names else set()) | ({NEGATIVE} if len(names) < len(items) else set())


def scores(real: np.ndarray, other: np.ndarray, k: int = 3, seed: int = 0) -> dict:
    """Feature metrics plus the two-sample AUC of one (real, other) pair of feature sets; the
    AUC is None when a side has fewer than ``C2ST_FOLDS`` rows."""
    c2st = two_sample_auc(real, other, seed=seed) if min(len(real), len(other)) >= C2ST_FOLDS else None
    return {**feature_metrics(real, other, k, seed), "two_sample_auc": None if c2st is None else c2st["auc"],
            "two_sample": c2st}


def real_floor(fr: np.ndarray, fs: np.ndarray, fref: np.ndarray | None, k: int = 3,
               seed: int = 0) -> tuple[dict, dict | None]:
    """The real-vs-real floor and its like-for-like synthetic counterpart.

    The floor scores a real ``reference`` set against a disjoint real ``compared`` set: the two
    parts of :func:`floor_split` of ``fr``, or, with second real features ``fref``, all of ``fr``
    against ``fref`` subsampled to the synthetic count. The counterpart scores the synthetic
    features, subsampled to the compared set's n, against the same reference set, so the two differ
    only in what is compared (identical to the overall scores when no subsampling was needed).
    Returns ``(floor, counterpart)``; the floor says ``skipped`` (metrics None) when a side is
    too small for the metrics.
    """
    if fref is None:
        ref_idx, cmp_idx = floor_split(len(fr), len(fs), seed)
        reference, compared = fr[ref_idx], fr[cmp_idx]
    else:
        reference, compared = fr, fref[_subsample(len(fref), len(fs), np.random.default_rng([seed, 5]))]
    counts = {"reference": len(reference), "compared": len(compared)}
    need = max(k + 1, C2ST_FOLDS)
    if min(counts.values()) < need:
        return {"counts": counts, **dict.fromkeys((*METRIC_KEYS, "two_sample_auc", "two_sample")),
                "skipped": f"{counts['reference']} reference / {counts['compared']} compared real images "
                           f"< {need} per side"}, None
    synth = fs[_subsample(len(fs), len(compared), np.random.default_rng([seed, 6]))]
    floor = {"counts": counts, **scores(reference, compared, k, seed), "skipped": None}
    counterpart = {"counts": {"real": len(reference), "synthetic": len(synth)},
                   **scores(reference, synth, k, seed)}
    # equal n: the k-NN metrics (coverage above all) depend on the two sides' sizes; with the
    # reference cut to the compared set's n, a perfect generator scores what the floor scores
    ref_n = reference[_subsample(len(reference), len(compared), np.random.default_rng([seed, 7]))]
    floor["equal_n"] = {"n": len(compared), **scores(ref_n, compared, k, seed)}
    counterpart["equal_n"] = {"n": len(synth), **scores(ref_n, synth, k, seed)}
    return floor, counterpart


def _load_real_ref(real_ref: str | Path, real_img: np.ndarray, image_size: int, max_images: int | None,
                   seed: int, kind: str) -> tuple[np.ndarray, int]:
    """``--real-ref`` images without those also in ``--real`` -> (images, how many were dropped)."""
    ref_img, _ = load_real(real_ref, image_size, max_images, seed + 1, kind)
    keep = _not_in(ref_img, real_img)
    if not keep.any():
        raise DataError(f"--real-ref {real_ref}: every image is also in --real; pass a disjoint real set "
                        "(e.g. the other split) or leave --real-ref out to split --real in two")
    return ref_img[keep], int((~keep).sum())


def _check_real_ref(real_ref: str | Path | None) -> None:
    from cxraug.data.adapters import resolve_data

    if real_ref is not None and not resolve_data(real_ref).expanduser().exists():
        raise DataError(f"--real-ref {real_ref}: not found; pass a second real dataset (e.g. the test "
                        "split's folder or manifest) or leave it out to split --real in two")


def evaluate(real: str | Path, synth: Path, extractor: str = "classifier", classifier: Path | None = None,
             inception_weights: Path | None = None, image_size: int = 64, max_images: int | None = 5000,
             seed: int = 0, labels: str | list[str] | None = None, min_count: int = 10, k: int = 3,
             ssim_pairs: int = 50, kind: str = "auto", xrv_weights: Path | None = None,
             real_ref: str | Path | None = None) -> dict:
    """Compute every metric of a synthetic cohort against real images; returns the eval card.

    Next to the synthetic scores, ``card["floor"]`` holds the same metrics between two disjoint
    real sets (two parts of ``real``, or ``real`` vs ``real_ref``) and ``card["synthetic_matched"]``
    the synthetic scores against the floor's reference set at the floor's n: read a synthetic
    score against its floor, not against zero."""
    # 1. extractor first: a missing weights file should fail before any image is read
    embed, info = make_extractor(extractor, classifier, inception_weights, xrv_weights=xrv_weights)
    _check_real_ref(real_ref)
    # 2. images at one size, aspect-preserving pad
    real_img, real_raw = load_real(real, image_size, max_images, seed, kind)
    syn_img, targets = load_synth(Path(synth), image_size, max_images, seed)
    targets = np.array([_canonical_target(t) for t in targets])  # manifests keep "pneumonia"
    ref_img, dropped = (None, 0) if real_ref is None else _load_real_ref(
        real_ref, real_img, image_size, max_images, seed, kind)
    # 3. features and metrics on everything
    fr, fs = embed(real_img), embed(syn_img)
    overall = scores(fr, fs, k, seed)
    floor, matched = real_floor(fr, fs, None if ref_img is None else embed(ref_img), k, seed)
    source = ({"source": "split", "real_ref": None} if real_ref is None else
              {"source": "real-ref", "real_ref": str(real_ref), "overlap_dropped": dropped})
    card = {
        "extractor": info, "real": str(real), "synth": str(synth),
        "counts": {"real": len(real_img), "synthetic": len(syn_img)},
        "resize": f"aspect-preserving pad to {image_size} px", "image_size": image_size,
        "seed": seed, "max_images": max_images, "k": k, "min_count": min_count,
        "metrics": {x: overall[x] for x in METRIC_KEYS},
        "diversity": ssim_diversity(syn_img, targets, ssim_pairs, seed),
        "two_sample_auc": overall["two_sample_auc"], "two_sample": overall["two_sample"],
        "floor": {**source, **floor}, "synthetic_matched": matched,
    }
    # 4. per label: a cohort target vs real images positive for it, when both sides are big enough
    wanted = _wanted(labels)
    per_label, skipped = {}, {}
    for t in sorted(set(targets.tolist()) - {"all"}):
        if t.lower() != NEGATIVE:
            try:
                t = L.canonical(t)
            except L.UnknownLabelError:
                skipped[t] = "not an observation"
                continue
        if wanted is not None and t not in wanted:
            continue
        ms, mr = targets == t, real_mask(real_raw, t)
        if min(ms.sum(), mr.sum()) < max(min_count, k + 1):
            skipped[t] = f"{int(mr.sum())} real / {int(ms.sum())} synthetic < {max(min_count, k + 1)}"
            continue
        per_label[t] = {"real": int(mr.sum()), "synthetic": int(ms.sum()),
                        **feature_metrics(fr[mr], fs[ms], k, seed)}
    card["per_label"], card["per_label_skipped"] = per_label, skipped
    return card


SUMMARY_COLUMNS = ["scope", "real", "synth", "FID", "KID", "prec", "rec", "dens", "cov", "C2ST AUC"]


def summary_rows(card: dict) -> list[list[object]]:
    """Table rows ``[scope, n real, n synth, FID, KID, P, R, D, C, C2ST AUC]`` for the CLI: the
    whole cohort, the same at the floor's n when that differs, the real-vs-real floor (its two
    real sets' sizes in the n columns), both again with equal n on each side (where the k-NN
    metrics of a perfect generator match the floor's), then each label; ``-`` where a value was
    not computed."""
    def num(v, fmt=".3f"):
        return "-" if v is None else format(v, fmt)

    def row(name, n_r, n_s, m, auc=None):
        kid_ = "-" if m["kid_mean"] is None else f"{m['kid_mean']:.4f}±{m['kid_std']:.4f}"
        return [name, n_r, n_s, num(m["fid"]), kid_,
                *(num(m[x]) for x in ("precision", "recall", "density", "coverage")), num(auc)]

    rows = [row("all", card["counts"]["real"], card["counts"]["synthetic"], card["metrics"],
                card.get("two_sample_auc"))]
    matched, floor = card.get("synthetic_matched"), card.get("floor")
    if matched is not None and matched["counts"] != card["counts"]:
        rows.append(row("all @ floor n", matched["counts"]["real"], matched["counts"]["synthetic"],
                        matched, matched["two_sample_auc"]))
    if floor is not None:
        rows.append(row("real-vs-real floor", floor["counts"]["reference"], floor["counts"]["compared"],
                        floor, floor["two_sample_auc"]))
    if matched is not None and "equal_n" in matched and matched["equal_n"]["n"] != matched["counts"]["real"]:
        for name, m in (("all @ equal n", matched["equal_n"]), ("real-vs-real @ equal n", floor["equal_n"])):
            rows.append(row(name, m["n"], m["n"], m, m["two_sample_auc"]))
    rows += [row(t, m["real"], m["synthetic"], m) for t, m in card["per_label"].items()]
    return rows

