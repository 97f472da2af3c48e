"""Pixel conventions: the only place where chest X-ray pixel ranges are converted.

Images live in three ranges, each owned by one function pair here:

* storage: ``uint8`` ``[H, W]``, single channel, 0 = black (air) - what PNGs and the cache hold;
* generator: ``float32`` ``[-1, 1]``, ``[B, 1, H, W]`` - VAE and diffusion inputs/outputs;
* classifier: ``float32`` ``(x/255 - mean) / std`` with one channel - timm models (``in_chans=1``);
* torchxrayvision: ``float32`` ``[-1024, 1024]`` - the range its pretrained models expect.

Resizing preserves the aspect ratio (pad or centre-crop to square), and nothing in cxraug flips
an image horizontally: a chest X-ray's left and right are anatomy (heart, aortic knob), not noise.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cxraug.core.errors import CxraugError

CLASSIFIER_MEAN = 0.5
CLASSIFIER_STD = 0.25
XRV_MAX = 1024.0

DICOM_SUFFIXES = (".dcm", ".dicom")


class ImageReadError(CxraugError, ValueError):
    """An image file that is missing, truncated or not an image."""


# What PIL raises for a broken file: truncated or corrupt data (OSError, SyntaxError, zlib and
# struct errors from damaged chunks, ValueError), not an image at all (UnidentifiedImageError),
# or a header declaring more pixels than PIL's limit (DecompressionBombError; the warning PIL
# gives between its limit and twice it is turned into an error by :func:`_bombs_are_errors`).
_PIL_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error,
               zlib.error, Image.DecompressionBombError, Image.DecompressionBombWarning)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


@contextmanager
def _bombs_are_errors():
    """Raise PIL's DecompressionBombWarning instead of decoding a huge image (PIL's pixel limit
    itself, ``Image.MAX_IMAGE_PIXELS``, is left as it is)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _bad_image(where: str, e: BaseException) -> ImageReadError:
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageReadError(f"{where}: not read, the header declares a huge image "
                              f"({_one_line(e)}); check or remove the file")
    return ImageReadError(f"{where}: not a readable image ({_one_line(e)}); re-export it as PNG "
                          "or JPEG")


def load_grayscale(path: str | Path) -> np.ndarray:
    """Read an image file as ``uint8 [H, W]`` grayscale (PNG/JPEG/..., or DICOM by suffix).

    16-bit images (PNG, TIFF) are scaled by their bit depth (a PNG's ``sBIT`` chunk, e.g. 12
    significant bits, when it has one), so a 16-bit copy of an 8-bit image reads as the
    original; 32-bit and float images, which have no fixed range, by their own min/max. Colour
    images are converted to luminance.
    Raises :class:`ImageReadError` naming the file for missing, truncated, corrupt or unreadable
    files, and for files whose header declares more pixels than PIL's decompression-bomb limit.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    if path.suffix.lower() in DICOM_SUFFIXES:
        return load_dicom(path)
    try:
        with _bombs_are_errors(), Image.open(path) as im:
            im.load()  # force decoding so truncated files fail here, not later
            if im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG"):
                bits = _png_significant_bits(path) if im.format == "PNG" else 16
                return _scale_bits_to_uint8(np.asarray(im, dtype=np.float32), bits)
            if im.mode in ("I", "F"):
                return _rescale_to_uint8(np.asarray(im, dtype=np.float32))
            return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    except _PIL_ERRORS as e:
        raise _bad_image(str(path), e) from e


def _scale_bits_to_uint8(a: np.ndarray, bits: int) -> np.ndarray:
    """Values of a ``bits``-deep image -> ``uint8`` (``2**bits - 1`` -> 255)."""
    top = float(2 ** bits - 1)
    return np.round(np.clip(a, 0, top) / top * 255.0).astype(np.uint8)


def _png_significant_bits(path: Path) -> int:
    """A 16-bit grayscale PNG's significant bits: its ``sBIT`` chunk if any, else 16. (PIL does
    not read sBIT; the chunk comes before the image data, so the file's head is enough.)"""
    import struct

    with open(path, "rb") as f:
        head = f.read(1 << 16)
    pos = 8  # after the PNG signature
    while pos + 8 <= len(head):
        length, kind = struct.unpack(">I4s", head[pos:pos + 8])
        if kind == b"sBIT" and length >= 1 and pos + 9 <= len(head):
            bits = head[pos + 8]
            return bits if 1 <= bits <= 16 else 16
        if kind == b"IDAT":
            break
        pos += 12 + length
    return 16


def _rescale_to_uint8(a: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(a)), float(np.max(a))
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.round((a - lo) / (hi - lo) * 255.0).astype(np.uint8)


def load_dicom(path: str | Path) -> np.ndarray:
    """Read a DICOM radiograph as ``uint8 [H, W]`` with bone bright.

    Applies the modality LUT (rescale slope/intercept) and the VOI LUT / window from the header,
    and inverts MONOCHROME1 images (where high values are dark) so the result always displays
    like a MONOCHROME2 radiograph.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path))
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises many types for broken files
        raise ImageReadError(f"{path}: not a readable DICOM image ({_one_line(e)})") from e
    if arr.ndim != 2:
        raise ImageReadError(f"{path}: expected a single-frame grayscale DICOM, got shape {arr.shape}")
    arr = apply_modality_lut(arr, ds)
    arr = apply_voi_lut(arr, ds, index=0)
    arr = _rescale_to_uint8(np.asarray(arr, dtype=np.float32))
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        arr = 255 - arr
    return arr


def decode_bytes(data: bytes, name: str = "<bytes>") -> np.ndarray:
    try:
        with _bombs_are_errors(), Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    except _PIL_ERRORS as e:
        raise _bad_image(name, e) from e


def resize_square(img: np.ndarray, size: int, mode: str = "pad") -> np.ndarray:
    """Aspect-preserving resize of ``uint8 [H, W]`` to ``[size, size]``.

    ``mode="pad"`` fits the whole image and pads the short side with black (nothing is cut off);
    ``mode="crop"`` fills the square and centre-crops the long side.
    """
    if img.ndim != 2:
        raise ValueError(f"expected a grayscale [H, W] image, got shape {img.shape}")
    h, w = img.shape
    if h == w == size:
        return img
    scale = (min if mode == "pad" else max)(size / h, size / w)
    if mode not in ("pad", "crop"):
        raise ValueError(f"resize mode must be 'pad' or 'crop', got {mode!r}")
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BICUBIC if scale > 1
                                                     else Image.Resampling.LANCZOS))
    out = np.zeros((size, size), dtype=np.uint8)
    if mode == "pad":
        top, left = (size - nh) // 2, (size - nw) // 2
        out[top:top + nh, left:left + nw] = resized
    else:
        top, left = (nh - size) // 2, (nw - size) // 2
        out[:] = resized[top:top + size, left:left + size]
    return out


# ------------------------------------------------------------------------------ range changes

def uint8_to_model(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``uint8 [..., H, W]`` -> generator range ``float32 [-1, 1]`` with a channel axis added."""
    t = torch.from_numpy(np.array(x, dtype=np.uint8, copy=True)) if not torch.is_tensor(x) else x
    t = t.to(torch.float32) / 127.5 - 1.0
    return t.unsqueeze(-3)


def model_to_uint8(x: torch.Tensor) -> np.ndarray:
    """Generator range ``[B, 1, H, W]`` (or ``[1, H, W]``) -> ``uint8 [B, H, W]``, clamped."""
    if x.shape[-3] != 1:
        raise ValueError(f"expected single-channel images [.., 1, H, W], got {tuple(x.shape)}")
    y = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return y.squeeze(-3).cpu().numpy()


def model_to_classifier(x: torch.Tensor) -> torch.Tensor:
    """Generator range ``[-1, 1]`` -> classifier input."""
    return ((x + 1.0) / 2.0 - CLASSIFIER_MEAN) / CLASSIFIER_STD


def uint8_to_classifier(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``uint8 [..., H, W]`` -> classifier input ``float32 [..., 1, H, W]``."""
    return model_to_classifier(uint8_to_model(x))


def uint8_to_xrv(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``uint8 [..., H, W]`` -> torchxrayvision's ``[-1024, 1024]`` with a channel axis."""
    return uint8_to_model(x) * XRV_MAX


def gray_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Repeat one channel to three, for pretrained RGB components (SD VAE, CLIP towers) only."""
    if x.shape[-3] != 1:
        raise ValueError(f"expected a single-channel tensor, got {tuple(x.shape)}")
    return x.expand(*x.shape[:-3], 3, *x.shape[-2:])


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """Average three channels back to one (outputs of RGB decoders)."""
    return x.mean(dim=-3, keepdim=True)


_warned: set[str] = set()


def check_model_range(x: torch.Tensor, where: str = "batch") -> None:
    """Warn once per ``where`` if a generator-range batch is clearly outside [-1, 1]."""
    if where in _warned:
        return
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.05 or hi > 1.05 or (hi - lo) < 1e-3:
        _warned.add(where)
        warnings.warn(f"{where}: expected pixels in [-1, 1], got [{lo:.3g}, {hi:.3g}]", stacklevel=2)
