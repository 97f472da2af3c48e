"""The label contract: one vocabulary, one value coding, one uncertainty policy.

Every dataset adapter, labeler, cohort and classifier in cxraug speaks this module's language:

* ``OBSERVATIONS``: the 14 CheXpert observations in CheXbert order (the column order of every
  label CSV cxraug writes and of every label vector it passes around).
* Raw values, as CheXpert/CheXbert write them: ``1`` positive, ``0`` negative, ``-1`` uncertain,
  ``NaN`` not mentioned / not labelled. A raw label vector is ``float32[14]``.
* An :class:`UncertaintyPolicy` turns raw values into training targets: ``ignore`` (uncertain ->
  NaN, i.e. masked out of the loss), ``zeros`` (uncertain -> 0) or ``ones`` (uncertain -> 1).
  Not-mentioned stays NaN under every policy; it is the loss's job to mask NaN.
* Mappings from other label vocabularies (NIH ChestX-ray14, Kermany, torchxrayvision) into the 14
  observations. Labels without a CheXpert counterpart (e.g. NIH Emphysema) are kept by the
  adapters as extra columns, never silently folded into another observation.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from cxraug.core.errors import CxraugError

OBSERVATIONS: tuple[str, ...] = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)
N_OBS = len(OBSERVATIONS)

#: The 11 diseases Diff-CXR's disease-knowledge templates use (No Finding, Pleural Other and
#: Support Devices left out), in label order.
DKIM_DISEASES: tuple[str, ...] = tuple(
    o for o in OBSERVATIONS if o not in ("No Finding", "Pleural Other", "Support Devices")
)

POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0
NOT_MENTIONED = float("nan")


class UncertaintyPolicy(str, enum.Enum):
    """How raw uncertain (-1) labels become training targets."""

    IGNORE = "ignore"  # uncertain -> NaN (masked out of the loss)
    ZEROS = "zeros"  # uncertain -> negative
    ONES = "ones"  # uncertain -> positive


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower())


# Accepted spellings -> canonical observation. Built from the canonical names plus the aliases
# users type on the command line (case, spaces and underscores do not matter).
_ALIASES: dict[str, str] = {_key(o): o for o in OBSERVATIONS}
_ALIASES.update(
    {
        _key("effusion"): "Pleural Effusion",
        _key("enlarged cardiom"): "Enlarged Cardiomediastinum",
        _key("ec"): "Enlarged Cardiomediastinum",
        _key("opacity"): "Lung Opacity",
        _key("lesion"): "Lung Lesion",
        _key("pleural_effusion"): "Pleural Effusion",
        _key("normal"): "No Finding",
        _key("support devices"): "Support Devices",
    }
)


class UnknownLabelError(CxraugError, ValueError):
    """A label name that is not one of the 14 observations (or an accepted alias)."""


def canonical(name: str) -> str:
    """Return the canonical observation for ``name`` (case/spacing-insensitive, aliases allowed).

    Raises :class:`UnknownLabelError` listing the valid names.
    """
    found = _ALIASES.get(_key(name))
    if found is None:
        valid = ", ".join(o.lower() for o in OBSERVATIONS)
        raise UnknownLabelError(f"unknown label {name!r}; valid labels are: {valid}")
    return found


def closest(name: str, cutoff: float = 0.85) -> str | None:
    """The observation ``name`` is probably a misspelling of (``"Pneumonai"`` -> Pneumonia), or
    None when it is an accepted spelling, not close to any, or a label name with more words
    (``"pneumothorax_size"``). Names of 3 letters or fewer are never guessed."""
    import difflib

    key = _key(name)
    keys = [k for k in _ALIASES if len(k) >= 4]
    if key in _ALIASES or len(key) < 4 or any(k in key and len(key) > len(k) + 1 for k in keys):
        return None
    match = difflib.get_close_matches(key, keys, n=1, cutoff=cutoff)
    return _ALIASES[match[0]] if match else None


def parse_label_list(text: str | Sequence[str]) -> list[str]:
    """Parse ``"pneumonia,effusion"`` (or a list) into canonical observation names, in input order."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [canonical(t.strip()) for t in items if t.strip()]
    if not names:
        raise UnknownLabelError("no label given; pass one or more observation names")
    return list(dict.fromkeys(names))


def index(name: str) -> int:
    return OBSERVATIONS.index(canonical(name))


def empty_vector() -> np.ndarray:
    """A raw label vector with every observation not mentioned (NaN)."""
    return np.full(N_OBS, np.nan, dtype=np.float32)


def vector(positive: Iterable[str] = (), negative: Iterable[str] = (),
           uncertain: Iterable[str] = ()) -> np.ndarray:
    """Build a raw label vector from names; everything else is NaN."""
    v = empty_vector()
    for names, value in ((negative, NEGATIVE), (uncertain, UNCERTAIN), (positive, POSITIVE)):
        for n in names:
            v[index(n)] = value
    return v


def check_raw(labels: np.ndarray, where: str = "labels") -> np.ndarray:
    """Validate a raw label array (``[..., 14]``, values in {1, 0, -1, NaN}); return it as float32."""
    arr = np.asarray(labels, dtype=np.float32)
    if arr.shape[-1] != N_OBS:
        raise ValueError(f"{where}: expected {N_OBS} label columns in CheXbert order, got {arr.shape[-1]}")
    ok = np.isnan(arr) | np.isin(arr, (POSITIVE, NEGATIVE, UNCERTAIN))
    if not ok.all():
        bad = sorted(set(arr[~ok].tolist()))[:5]
        raise ValueError(f"{where}: label values must be 1, 0, -1 or blank; found {bad}")
    return arr


def apply_policy(labels: np.ndarray, policy: UncertaintyPolicy | str = UncertaintyPolicy.IGNORE) -> np.ndarray:
    """Turn raw labels into training targets in {0, 1, NaN} under ``policy``."""
    policy = UncertaintyPolicy(policy)
    out = np.array(labels, dtype=np.float32, copy=True)
    unc = out == UNCERTAIN
    out[unc] = {UncertaintyPolicy.IGNORE: np.nan, UncertaintyPolicy.ZEROS: 0.0,
                UncertaintyPolicy.ONES: 1.0}[policy]
    return out


def derive_no_finding(labels: np.ndarray) -> np.ndarray:
    """Set No Finding the way the CheXpert labeler does.

    No Finding is positive when no observation other than Support Devices is positive or
    uncertain; otherwise it is left blank (NaN), never negative - CheXpert never writes 0 there.
    """
    out = np.array(labels, dtype=np.float32, copy=True)
    nf = OBSERVATIONS.index("No Finding")
    others = [i for i, o in enumerate(OBSERVATIONS) if o not in ("No Finding", "Support Devices")]
    finding = np.isin(out[..., others], (POSITIVE, UNCERTAIN)).any(axis=-1)
    out[..., nf] = np.where(finding, np.nan, POSITIVE)
    return out


def positives(labels: np.ndarray) -> list[str]:
    """Names of the positive observations in a raw vector, in label order."""
    return [o for o, v in zip(OBSERVATIONS, labels) if v == POSITIVE]


def to_csv_value(v: float) -> str:
    """CheXpert CSV coding: ``1.0`` / ``0.0`` / ``-1.0`` / empty."""
    return "" if math.isnan(v) else f"{v:.1f}"


# --------------------------------------------------------------------------------------------
# Mappings from other vocabularies. Each maps a source label to one observation. Several source
# labels may map to the same observation (NIH Mass and Nodule -> Lung Lesion): the observation is
# positive if any of them is, negative if all that are present are negative.

NIH_TO_CHEXPERT: dict[str, str | None] = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Effusion": "Pleural Effusion",
    "Emphysema": None,
    "Fibrosis": None,
    "Hernia": None,
    "Infiltration": "Lung Opacity",
    "Mass": "Lung Lesion",
    "Nodule": "Lung Lesion",
    "Pleural_Thickening": "Pleural Other",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "No Finding": "No Finding",
}
NIH_LABELS: tuple[str, ...] = tuple(NIH_TO_CHEXPERT)

#: Kermany's pneumonia flag; subtype (bacteria/virus) is kept as an extra column by the adapter.
KERMANY_TO_CHEXPERT: dict[str, str | None] = {"pneumonia": "Pneumonia", "normal": "No Finding"}

#: torchxrayvision's pathology names (``xrv.datasets.default_pathologies`` and dataset-specific
#: ones) -> observation.
XRV_TO_CHEXPERT: dict[str, str | None] = {
    "Atelectasis": "Atelectasis",
    "Consolidation": "Consolidation",
    "Infiltration": "Lung Opacity",
    "Pneumothorax": "Pneumothorax",
    "Edema": "Edema",
    "Emphysema": None,
    "Fibrosis": None,
    "Effusion": "Pleural Effusion",
    "Pneumonia": "Pneumonia",
    "Pleural_Thickening": "Pleural Other",
    "Cardiomegaly": "Cardiomegaly",
    "Nodule": "Lung Lesion",
    "Mass": "Lung Lesion",
    "Hernia": None,
    "Lung Lesion": "Lung Lesion",
    "Fracture": "Fracture",
    "Lung Opacity": "Lung Opacity",
    "Enlarged Cardiomediastinum": "Enlarged Cardiomediastinum",
    "Support Devices": "Support Devices",
    "No Finding": "No Finding",
}

VOCABULARIES: dict[str, Mapping[str, str | None]] = {
    "nih": NIH_TO_CHEXPERT,
    "kermany": KERMANY_TO_CHEXPERT,
    "xrv": XRV_TO_CHEXPERT,
    "chexpert": {o: o for o in OBSERVATIONS},
}


def map_labels(source: Mapping[str, float], vocabulary: str) -> np.ndarray:
    """Map one sample's labels in another vocabulary to a raw 14-vector.

    ``source`` maps source label -> value (1, 0, -1 or NaN). Source labels absent from the
    vocabulary raise; labels mapped to ``None`` are dropped (the adapter keeps them as extras).
    Observations no source label maps to stay NaN (not labelled).
    """
    table = VOCABULARIES[vocabulary]
    out = empty_vector()
    for name, value in source.items():
        if name not in table:
            raise UnknownLabelError(
                f"unknown {vocabulary} label {name!r}; expected one of {', '.join(table)}")
        target = table[name]
        if target is None:
            continue
        i = OBSERVATIONS.index(target)
        value = float(value)
        if math.isnan(value):
            continue
        # positive beats uncertain beats negative when several source labels share a target
        rank = {POSITIVE: 2, UNCERTAIN: 1, NEGATIVE: 0}
        if math.isnan(out[i]) or rank[value] > rank[float(out[i])]:
            out[i] = value
    return out
