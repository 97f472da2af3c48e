"""Feature extractors of the ``cxraug eval`` quality card: ``uint8 [N, H, W]`` images ->
``float32 [N, F]`` features, and a description of the extractor for the card.

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
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cxraug.classify.model import Classifier
from cxraug.core.artifacts import torch_load_plain
from cxraug.core.errors import CxraugError, WeightsError
from cxraug.data.transforms import gray_to_rgb, uint8_to_xrv

EXTRACTORS = ("classifier", "inception", "xrv", "pixels")
PIXELS_SIZE = 16  # the pixels extractor's thumbnail side: 16 x 16 = 256 features
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE)


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

    where = f"download {INCEPTION_URL} yourself and pass --inception-weights FILE (cxraug never downloads)"
    if path is None or not Path(path).is_file():
        raise WeightsError(f"--inception-weights {path}: file not found; {where}")
    try:  # safe load first: only if it is a plain tensor state dict is it handed to torch-fidelity
        state = torch_load_plain(path)
    except WeightsError as e:
        raise WeightsError(f"--inception-weights {e}; {where}") from None
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
