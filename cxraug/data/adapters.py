"""Dataset adapters: each public layout -> :class:`~cxraug.data.datasets.CXRDataset`.

Every adapter takes the dataset's root folder (as the user downloaded it) and returns the one
schema. Filters are stated in each docstring and recorded in ``dataset.filters``:

* ``frontal`` (default on): keep PA/AP views; images without view information are kept.
* No adapter keeps one image per patient, and none filters by age, sex or label.

Label tables follow each source's own semantics, mapped through :mod:`cxraug.data.labels`:
NIH and Kermany labels are complete for the findings they cover (absent = negative), CheXpert and
MIMIC tables keep their 1 / 0 / -1 / blank coding.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from cxraug.core.errors import DataError
from cxraug.data import labels as L
from cxraug.data.datasets import CXRDataset, frontal_only, make_table

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp")


def read_csv(path: Path, required: tuple[str, ...], what: str, hint: str = "") -> pd.DataFrame:
    """Read a CSV (optionally .gz) and check its columns, with one-line errors naming the file.

    ``hint`` is appended to the missing-column error (e.g. the layouts cxraug knows).
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected the {what})")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    # pandas renames a repeated column "x" to "x.1": two columns of one name are a conflict
    for c in df.columns:
        m = re.fullmatch(r"(.+)\.(\d+)", str(c))
        if m and m.group(1) in df.columns:
            raise DataError(f"{path}: column {m.group(1)!r} appears more than once; keep one")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; the {what} needs "
                        f"{', '.join(required)} (found: {_columns(df.columns)}){hint}")
    if df.empty:
        raise DataError(f"{path}: has no rows")
    return df


def _columns(columns, limit: int = 20) -> str:
    cols = [str(c) for c in columns]
    shown = ", ".join(repr(c) if c != c.strip() or not c else c for c in cols[:limit])
    return (shown + (f", ... ({len(cols)} in all)" if len(cols) > limit else "")) or "none"


#: The table layouts cxraug reads, with the columns each needs (shown when a table matches none).
LAYOUT_COLUMNS: dict[str, str] = {
    "kermany": "index.csv with image_path, split, patient_id, pneumonia (optional subtype)",
    "nih14": "index.csv with image_id, image_path_<size>, patient_id, finding_labels, or "
             "Data_Entry_2017*.csv with Image Index, Finding Labels, Patient ID, View Position",
    "chexpert": "train.csv / valid.csv with Path, Frontal/Lateral and the 14 observations",
    "mimic": "mimic-cxr-2.0.0-metadata.csv (dicom_id, subject_id, study_id, ViewPosition) and "
             "mimic-cxr-2.0.0-chexpert.csv",
    "manifest": "manifest.csv or labels.csv (or any CSV given as the data path) with path "
                "(optional id, patient_id, view, report, split, label columns)",
}


def _layouts_hint() -> str:
    return ("; known layouts: " + "; ".join(f"{k}: {v}" for k, v in LAYOUT_COLUMNS.items())
            + "; rename the columns, or pass --dataset folder to read only the images, unlabelled")


# Official split values: anything else in a split column is an error, never training data.
SPLIT_VALUES: dict[str, str] = {"": "", "train": "train", "training": "train", "val": "val",
                                "valid": "val", "validate": "val", "validation": "val",
                                "test": "test", "testing": "test"}


def _check_splits(table: pd.DataFrame, where: Path | str) -> pd.DataFrame:
    """Map official split values to train / val / test / blank; raise naming any other value."""
    raw = table["split"].astype(str)
    norm = raw.str.strip().str.lower()
    bad = ~norm.isin(list(SPLIT_VALUES))
    if bad.any():
        value = raw[bad].iloc[0]
        n = int((raw == value).sum())
        others = raw[bad & (raw != value)].nunique()
        raise DataError(f"{where}: split value {value!r} in {n} row(s) (e.g. image "
                        f"{table.loc[raw == value, 'id'].iloc[0]!r})"
                        + (f" and {others} other unknown value(s)" if others else "")
                        + "; allowed: train, val, test (also valid, validate, validation, "
                        "training, testing) or blank for no official split")
    table = table.copy()
    table["split"] = norm.map(SPLIT_VALUES)
    return table


def _value(text: str, where: str) -> float:
    """A CheXpert-coded cell: '1', '1.0', '0', '-1', '' -> float (NaN for blank)."""
    t = str(text).strip()
    if t == "" or t.lower() == "nan":
        return np.nan
    try:
        v = float(t)
    except ValueError:
        raise DataError(f"{where}: label value {t!r} is not 1, 0, -1 or blank") from None
    if v not in (1.0, 0.0, -1.0):
        raise DataError(f"{where}: label value {t!r} is not 1, 0, -1 or blank")
    return v


def _finish(name: str, rows: list[dict], source: str, root: Path, filters: list[str],
            frontal: bool, extras: list[str] | None = None,
            table_file: Path | None = None) -> CXRDataset:
    table = make_table(rows, source)
    if table.empty:
        raise DataError(f"{root}: no images found for the {name} layout")
    table = _check_splits(table, table_file or root)
    if frontal:
        before = len(table)
        table = frontal_only(table)
        filters.append(f"frontal views only (PA/AP; {before - len(table)} lateral/other dropped)")
    return CXRDataset(name=name, table=table, root=root, filters=filters, extra_labels=extras or [])


# ----------------------------------------------------------------------------------- Kermany

def kermany(root: Path, frontal: bool = True, resolution: int | None = None) -> CXRDataset:
    """Kermany et al. 2018 paediatric pneumonia (all frontal AP).

    Two layouts: cxraug's ``index.csv`` (``image_path, split, patient_id, pneumonia, subtype``) or
    the original ``{train,test}/{NORMAL,PNEUMONIA}/*.jpeg`` folders, where patient ids come from
    file names (``personN_...`` for pneumonia, ``IM-NNNN-...`` for normal). Labels: Pneumonia
    = 1/0 and No Finding = 1 for normal images; other observations are not labelled (NaN).
    ``subtype`` (normal / bacteria / virus) is kept as an extra column.
    """
    index = root / "index.csv"
    rows = []
    if index.is_file():
        df = read_csv(index, ("image_path", "split", "patient_id", "pneumonia"), "Kermany index")
        for i, r in df.iterrows():
            where = f"{index}: row {i + 2}, column pneumonia"
            pneu = _value(r["pneumonia"], where)
            if np.isnan(pneu) or pneu == L.UNCERTAIN:
                raise DataError(f"{where}: must be 0 or 1")
            sub = str(r.get("subtype", "")).strip().lower()
            if sub and (sub == "normal") == (pneu == 1):
                raise DataError(f"{index}: row {i + 2}: columns pneumonia ({r['pneumonia']}) and "
                                f"subtype ({r['subtype']}) disagree; normal images have "
                                "pneumonia 0, bacteria/virus images pneumonia 1")
            rows.append(_kermany_row(root / r["image_path"], r["split"], r["patient_id"], pneu,
                                     r.get("subtype", ""), Path(r["image_path"]).name))
    else:
        files = sorted(p for p in root.glob("*/*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
        for p in files:
            split, cls = p.parent.parent.name.lower(), p.parent.name.upper()
            if cls not in ("NORMAL", "PNEUMONIA"):
                continue
            m = re.match(r"(person\d+)|(IM-\d+)|(NORMAL2-IM-\d+)", p.stem)
            patient = m.group(0) if m else p.stem
            subtype = "normal" if cls == "NORMAL" else ("virus" if "virus" in p.stem else "bacteria")
            rows.append(_kermany_row(p, split, patient, float(cls == "PNEUMONIA"), subtype,
                                     str(p.relative_to(root))))
        if not rows:
            raise DataError(f"{root}: neither index.csv nor {{train,test}}/{{NORMAL,PNEUMONIA}}/ "
                            "image folders found; pass the Kermany dataset root")
    return _finish("kermany", rows, "kermany", root, [], False, ["subtype"],
                   index if index.is_file() else None)


def _kermany_row(path: Path, split: str, patient: str, pneumonia: float, subtype: str,
                 ident: str) -> dict:
    vec = L.map_labels({"pneumonia": pneumonia, "normal": 1.0 - pneumonia}, "kermany")
    vec[L.index("No Finding")] = 1.0 if pneumonia == 0 else np.nan  # CheXpert: never 0
    return {"id": ident, "path": str(path), "patient_id": patient, "view": "AP",
            "split": split, "labels": vec, "extras": {"subtype": subtype}}


# --------------------------------------------------------------------------------------- NIH

def _nih_vector(findings: set[str], where: str) -> tuple[np.ndarray, dict]:
    unknown = findings - set(L.NIH_LABELS)
    if unknown:
        raise DataError(f"{where}: unknown NIH finding {sorted(unknown)[0]!r}; "
                        f"expected {', '.join(L.NIH_LABELS)}")
    src = {n: float(n in findings) for n in L.NIH_LABELS}
    vec = L.map_labels(src, "nih")
    vec[L.index("No Finding")] = 1.0 if "No Finding" in findings else np.nan
    extras = {n: src[n] for n, t in L.NIH_TO_CHEXPERT.items() if t is None}
    return vec, extras


def _nih_columns_agree(df: pd.DataFrame, index: Path) -> None:
    """The subset index repeats finding_labels as one 0/1 column per NIH label: they must agree."""
    listed = df["finding_labels"].map(lambda t: {f.strip() for f in t.split("|") if f.strip()})
    for name in L.NIH_LABELS:
        if name not in df.columns:
            continue
        flag = df[name].str.strip().isin(["1", "1.0"])
        off = flag != listed.map(lambda fs, name=name: name in fs)
        if off.any():
            i = int(np.flatnonzero(off.to_numpy())[0])
            raise DataError(f"{index}: column {name} ({df[name].iloc[i]}) and finding_labels "
                            f"({df['finding_labels'].iloc[i]!r}) disagree in {int(off.sum())} "
                            f"row(s), first row {i + 2}; fix one of the two label sources")


def nih14(root: Path, frontal: bool = True, resolution: int | None = None) -> CXRDataset:
    """NIH ChestX-ray14 (Wang et al. 2017): all images are frontal (PA/AP).

    Layouts: cxraug's subset ``index.csv`` (``image_id, image_path_256|image_path_128, patient_id,
    view, finding_labels``; ``resolution`` picks the image column, default the largest), or the
    official ``Data_Entry_2017*.csv`` beside an ``images/`` folder (also searched one level down,
    as in the ``images_001/images`` tarballs). NIH's 14 findings are complete (absent = 0) and
    map to CheXpert observations (Effusion -> Pleural Effusion, Infiltration -> Lung Opacity,
    Mass/Nodule -> Lung Lesion, Pleural_Thickening -> Pleural Other); Emphysema, Fibrosis and
    Hernia have no counterpart and are kept as extra columns.
    """
    index = root / "index.csv"
    rows = []
    if index.is_file():
        table_file = index
        head = read_csv(index, ("image_id", "patient_id", "finding_labels"), "NIH subset index")
        img_cols = sorted((c for c in head.columns if c.startswith("image_path_")),
                          key=lambda c: int(c.rsplit("_", 1)[1]))
        if not img_cols:
            raise DataError(f"{index}: missing an image_path_<size> column (e.g. image_path_256)")
        col = f"image_path_{resolution}" if resolution else img_cols[-1]
        if col not in head.columns:
            raise DataError(f"{index}: no column {col}; available: {', '.join(img_cols)}")
        _nih_columns_agree(head, index)
        for i, r in head.iterrows():
            findings = {f.strip() for f in r["finding_labels"].split("|") if f.strip()}
            vec, extras = _nih_vector(findings, f"{index}: row {i + 2}")
            rows.append({"id": r["image_id"], "path": str(root / r[col]),
                         "patient_id": r["patient_id"], "view": r.get("view", "UNKNOWN"),
                         "labels": vec, "extras": extras})
    else:
        entries = sorted(root.glob("Data_Entry_2017*.csv")) + sorted(root.glob("Data_Entry_2017*.csv.gz"))
        if not entries:
            raise DataError(f"{root}: neither index.csv nor Data_Entry_2017*.csv found; pass the "
                            "NIH ChestX-ray14 root")
        table_file = entries[0]
        df = read_csv(entries[0], ("Image Index", "Finding Labels", "Patient ID", "View Position"),
                      "NIH Data_Entry table")
        found = {p.name: p for p in root.glob("images*/**/*.png")}
        for i, r in df.iterrows():
            findings = {f.strip() for f in r["Finding Labels"].split("|") if f.strip()}
            vec, extras = _nih_vector(findings, f"{entries[0]}: row {i + 2}")
            path = found.get(r["Image Index"], root / "images" / r["Image Index"])
            rows.append({"id": r["Image Index"], "path": str(path), "patient_id": r["Patient ID"],
                         "view": r["View Position"], "labels": vec, "extras": extras})
    extras = [n for n, t in L.NIH_TO_CHEXPERT.items() if t is None]
    return _finish("nih14", rows, "nih14", root, [], frontal, extras, table_file)


# ---------------------------------------------------------------------------------- CheXpert

def chexpert(root: Path, frontal: bool = True, resolution: int | None = None) -> CXRDataset:
    """CheXpert (Irvin et al. 2019): ``train.csv`` and ``valid.csv`` (``Path, Frontal/Lateral,
    AP/PA`` and the 14 observations coded 1 / 0 / -1 / blank). ``Path`` starts with the dataset
    folder name (``CheXpert-v1.0-small/train/...``) and is resolved against the root or its
    parent. Patient id from the path (``patientNNNNN``); ``valid`` is the official test split.
    """
    rows = []
    csvs = [(root / "train.csv", "train"), (root / "valid.csv", "test")]
    if not any(p.is_file() for p, _ in csvs):
        raise DataError(f"{root}: no train.csv or valid.csv; pass the CheXpert root folder")
    for csv, split in csvs:
        if not csv.is_file():
            continue
        df = read_csv(csv, ("Path", "Frontal/Lateral", *L.OBSERVATIONS), "CheXpert label table")
        for i, r in df.iterrows():
            rel = Path(r["Path"])
            path = next((c for c in (root / rel, root.parent / rel, root / Path(*rel.parts[1:]))
                         if c.exists()), root.parent / rel)
            m = re.search(r"patient\d+", r["Path"])
            view = r.get("AP/PA", "") or ("LATERAL" if r["Frontal/Lateral"] == "Lateral" else "UNKNOWN")
            vec = np.array([_value(r[o], f"{csv}: row {i + 2}, column {o}") for o in L.OBSERVATIONS],
                           dtype=np.float32)
            rows.append({"id": r["Path"], "path": str(path), "patient_id": m.group(0) if m else r["Path"],
                         "view": view, "split": split, "labels": vec})
    return _finish("chexpert", rows, "chexpert", root, [], frontal)


# ------------------------------------------------------------------------------------- MIMIC

def mimic(root: Path, frontal: bool = True, resolution: int | None = None) -> CXRDataset:
    """MIMIC-CXR-JPG (Johnson et al. 2019).

    Needs ``mimic-cxr-2.0.0-metadata.csv[.gz]`` (``dicom_id, subject_id, study_id,
    ViewPosition``), the label table ``mimic-cxr-2.0.0-chexpert.csv[.gz]`` (or ``-negbio``), and
    optionally ``mimic-cxr-2.0.0-split.csv[.gz]``. Images at
    ``files/pXX/p<subject>/s<study>/<dicom_id>.jpg``; reports (from MIMIC-CXR, not -JPG) at
    ``files/pXX/p<subject>/s<study>.txt`` under the root or a ``reports/`` folder beside it.
    Labels are per study; every image of a study gets them. Official ``validate`` counts as
    validation and ``test`` as test.
    """
    def find(stem: str) -> Path | None:
        for suffix in (".csv", ".csv.gz"):
            if (root / f"{stem}{suffix}").is_file():
                return root / f"{stem}{suffix}"
        return None

    meta_path = find("mimic-cxr-2.0.0-metadata")
    label_path = find("mimic-cxr-2.0.0-chexpert") or find("mimic-cxr-2.0.0-negbio")
    if meta_path is None or label_path is None:
        raise DataError(f"{root}: expected mimic-cxr-2.0.0-metadata.csv(.gz) and "
                        "mimic-cxr-2.0.0-chexpert.csv(.gz) in the MIMIC-CXR-JPG root")
    meta = read_csv(meta_path, ("dicom_id", "subject_id", "study_id", "ViewPosition"), "MIMIC metadata")
    lab = read_csv(label_path, ("subject_id", "study_id", *L.OBSERVATIONS), "MIMIC label table")
    lab = lab.set_index("study_id")
    split_path = find("mimic-cxr-2.0.0-split")
    splits = {}
    if split_path is not None:
        sp = read_csv(split_path, ("dicom_id", "split"), "MIMIC split table")
        splits = dict(zip(sp["dicom_id"], sp["split"].replace({"validate": "val"})))
    rows = []
    for i, r in meta.iterrows():
        subj, study = r["subject_id"], r["study_id"]
        folder = Path("files") / f"p{subj[:2]}" / f"p{subj}"
        vec = L.empty_vector()
        if study in lab.index:
            rec = lab.loc[study]
            rec = rec.iloc[0] if isinstance(rec, pd.DataFrame) else rec
            vec = np.array([_value(rec[o], f"{label_path}: study {study}, column {o}")
                            for o in L.OBSERVATIONS], dtype=np.float32)
        report = None
        for rroot in (root, root / "reports", root.parent / "mimic-cxr-reports"):
            rp = rroot / folder / f"s{study}.txt"
            if rp.is_file():
                report = rp.read_text(errors="replace")
                break
        rows.append({"id": r["dicom_id"], "path": str(root / folder / f"s{study}" / f"{r['dicom_id']}.jpg"),
                     "patient_id": subj, "view": r["ViewPosition"] or "UNKNOWN",
                     "split": splits.get(r["dicom_id"], ""), "labels": vec, "report": report})
    return _finish("mimic", rows, "mimic", root, [], frontal, table_file=split_path)


# ---------------------------------------------------------------------------------- manifest

MANIFEST_NAMES = ("manifest.csv", "labels.csv")


def manifest(root: Path, frontal: bool = True, resolution: int | None = None) -> CXRDataset:
    """A generic CSV manifest, for a hospital's own data.

    ``root`` is the CSV file or a folder holding ``manifest.csv``. Columns: ``path`` (required;
    relative to the CSV's folder or absolute; PNG/JPEG/DICOM), optional ``id``, ``patient_id``
    (default: the image id, i.e. one patient per image), ``view``, ``report``, ``split``, and any
    of the 14 observations as columns (case-insensitive names, aliases like ``effusion``) coded
    1 / 0 / -1 / blank. Other columns are kept as extras.
    """
    csv = root if root.is_file() else next((root / n for n in MANIFEST_NAMES if (root / n).is_file()),
                                           root / MANIFEST_NAMES[0])
    df = read_csv(csv, ("path",), "manifest (one row per image)", _layouts_hint())
    base = csv.parent
    label_cols, extras = manifest_columns(csv, df.columns)
    rows = []
    for i, r in df.iterrows():
        path = Path(r["path"])
        path = path if path.is_absolute() else base / path
        vec = L.empty_vector()
        for c, obs in label_cols.items():
            vec[L.index(obs)] = _value(r[c], f"{csv}: row {i + 2}, column {c}")
        ident = r.get("id") or r["path"]
        rows.append({"id": ident, "path": str(path), "patient_id": r.get("patient_id") or ident,
                     "view": r.get("view") or "UNKNOWN", "split": r.get("split", ""),
                     "report": r.get("report") or None, "labels": vec,
                     "extras": {c: r[c] for c in extras}})
    return _finish("manifest", rows, "manifest", base, [], frontal, extras, csv)


MANIFEST_BASE = ("path", "id", "patient_id", "view", "report", "split")


def manifest_columns(csv: Path | str, columns) -> tuple[dict[str, str], list[str]]:
    """Sort a manifest's columns into label columns (column -> observation) and extras.

    Raises naming the columns for a near-miss of a base column (``Patient ID`` for
    ``patient_id``: it would silently become an extra), a likely misspelt label (``Pneumonai``)
    and two columns that give the same label (``Pneumonia`` and ``pneumonia``, ``effusion`` and
    ``Pleural Effusion``).
    """
    label_cols: dict[str, str] = {}
    extras: list[str] = []
    keys = {re.sub(r"[^a-z0-9]+", "", b): b for b in MANIFEST_BASE}
    for c in map(str, columns):
        if c in MANIFEST_BASE:
            continue
        base = keys.get(re.sub(r"[^a-z0-9]+", "", c.lower()))
        if base is not None:
            raise DataError(f"{csv}: column {c!r} is read as an extra column, not as {base!r}; "
                            f"rename it to {base} (manifest column names are exact)")
        try:
            obs = L.canonical(c)
        except L.UnknownLabelError:
            near = L.closest(c)
            if near is not None:
                raise DataError(f"{csv}: column {c!r} looks like a misspelt label {near!r}; "
                                f"rename it to {near!r}, or to a name not close to a label to "
                                "keep it as an extra column") from None
            extras.append(c)
            continue
        same = [k for k, v in label_cols.items() if v == obs]
        if same:
            raise DataError(f"{csv}: columns {same[0]!r} and {c!r} both give the label {obs!r}; "
                            "keep one of them")
        label_cols[c] = obs
    return label_cols, extras


def folder(root: Path, frontal: bool = True, resolution: int | None = None) -> CXRDataset:
    """A folder of images with no labels (e.g. a synthetic cohort or real images for FID).
    Every image file below ``root`` (PNG/JPEG/DICOM), one patient per image."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    rows = [{"id": str(p.relative_to(root)), "path": str(p), "patient_id": str(p.relative_to(root))}
            for p in files]
    if not rows:
        raise DataError(f"{root}: no image files (png/jpg/dcm) found")
    return _finish("folder", rows, "folder", root, [], False)


ADAPTERS: dict[str, Callable[..., CXRDataset]] = {
    "kermany": kermany,
    "nih14": nih14,
    "chexpert": chexpert,
    "mimic": mimic,
    "manifest": manifest,
    "folder": folder,
}


def _header(path: Path) -> list[str]:
    try:
        return [str(c) for c in pd.read_csv(path, dtype=str, nrows=0).columns]
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None


def detect(root: Path) -> str:
    """Guess the adapter for a folder from the files in it.

    An ``index.csv`` must match a known layout by its columns; one that matches none is an error
    listing the columns found and those each layout needs, never read as an unlabelled folder.
    """
    if root.is_file():
        return "manifest"
    index = root / "index.csv"
    if index.is_file():
        cols = _header(index)
        if {"image_path", "split", "patient_id", "pneumonia"} <= set(cols):
            return "kermany"
        if ({"image_id", "patient_id", "finding_labels"} <= set(cols)
                and any(c.startswith("image_path_") for c in cols)):
            return "nih14"
        raise DataError(f"{index}: its columns match no known layout (found: {_columns(cols)})"
                        + _layouts_hint())
    if any(root.glob("Data_Entry_2017*")):
        return "nih14"
    if (root / "train.csv").is_file() or (root / "valid.csv").is_file():
        return "chexpert"
    if any(root.glob("mimic-cxr-2.0.0-metadata.csv*")):
        return "mimic"
    if any((root / n).is_file() for n in MANIFEST_NAMES):
        return "manifest"
    if any((root / s / c).is_dir() for s in ("train", "test") for c in ("NORMAL", "PNEUMONIA")):
        return "kermany"
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.rglob("*")):
        return "folder"
    raise DataError(f"{root}: cannot tell which dataset this is; pass --dataset "
                    f"({', '.join(ADAPTERS)})")


MISSING_POLICIES = ("error", "keep")


def load_dataset(data: str | Path, kind: str = "auto", frontal: bool = True,
                 resolution: int | None = None, missing: str = "error") -> CXRDataset:
    """Load a dataset folder (or manifest CSV) with the named adapter, or detect it.

    Image files the table lists but that do not exist raise a :class:`DataError` naming the
    first few and their count (``missing="error"``); ``missing="keep"`` keeps their rows, for
    callers that report them (``cxraug data info``) or skip unreadable images later
    (``--skip-bad``; the image cache lists what it skipped).
    """
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing={missing!r}: expected one of {MISSING_POLICIES}")
    root = Path(data).expanduser()
    if not root.exists():
        raise DataError(f"{root}: data path not found")
    kind = detect(root) if kind == "auto" else kind
    if kind not in ADAPTERS:
        raise DataError(f"unknown dataset kind {kind!r}; choose one of auto, {', '.join(ADAPTERS)}")
    ds = ADAPTERS[kind](root.resolve(), frontal=frontal, resolution=resolution)
    if len(ds) == 0:
        raise DataError(f"{root}: the {kind} adapter found no images (after filters: {ds.filters})")
    if missing == "error":
        absent = missing_files(ds)
        if absent:
            raise DataError(missing_message(ds, absent)
                            + " (--skip-bad, where a command has it, leaves them out)")
    return ds


def missing_files(ds: CXRDataset) -> list[str]:
    """Every image path of ``ds`` that is not an existing file (rows without a path, e.g. IU
    reports without images, are not counted)."""
    return [p for p in ds.table["path"].astype(str) if p and not os.path.isfile(p)]


def missing_message(ds: CXRDataset, absent: list[str], show: int = 3) -> str:
    """One line: how many listed image files do not exist, the first few, and the fix."""
    def short(p: str) -> str:
        try:
            return str(Path(p).relative_to(ds.root)) if ds.root is not None else p
        except ValueError:
            return p

    names = ", ".join(short(p) for p in absent[:show])
    more = f" and {len(absent) - show} more" if len(absent) > show else ""
    return (f"{ds.root}: {len(absent)} of {len(ds)} image files listed by the {ds.name} table do "
            f"not exist: {names}{more}; fix the paths or remove those rows")


# ------------------------------------------------------------------------- embedded sample

SAMPLES = ("kermany", "nih14")


def sample_root(name: str = "kermany") -> Path:
    """Folder of the small real sample shipped with cxraug (see its NOTICE.txt for licences)."""
    from importlib.resources import files

    if name not in SAMPLES:
        raise DataError(f"unknown embedded sample {name!r}; choose one of {', '.join(SAMPLES)}")
    return Path(str(files("cxraug") / "assets" / "sample" / name))


def resolve_data(data: str | Path | None) -> Path:
    """A ``--data`` argument: a path, ``sample:<name>``, or nothing (the Kermany sample)."""
    if data is None or str(data) == "":
        return sample_root("kermany")
    text = str(data)
    if text.startswith("sample:"):
        return sample_root(text.split(":", 1)[1])
    return Path(text)


# ------------------------------------------------------------------------------- IU-Xray

def iu(root: Path | None = None, frontal: bool = True, resolution: int | None = None,
       reports: Path | None = None) -> CXRDataset:
    """IU-Xray / Open-i (Demner-Fushman et al. 2016): report XMLs + PNG images.

    Reports come from ``reports`` (``NLMCXR_reports.tgz`` or a folder of XMLs), by default the
    copy inside the installed torchxrayvision package; images from ``root`` (a folder of
    ``CXR<n>_<k>_IM-....png`` files, as in ``NLMCXR_png.tgz``). Without ``root`` the dataset
    lists one row per report with no image (enough for labels, templates and ``data info``).
    Labels: cxraug's CheXpert-style rule labeler on findings + impression. View positions come
    from torchxrayvision's ``nlmcxr_dicom_metadata.csv.gz`` when available; frontal filter as
    usual (images of unknown view are kept).
    """
    from cxraug.data.iu import read_iu_reports
    from cxraug.data.labeler import RuleLabeler

    recs = read_iu_reports(reports)
    labels = RuleLabeler().label([r.text for r in recs])
    views = _iu_views()
    rows = []
    for rec, vec in zip(recs, labels):
        base = {"report": rec.text, "patient_id": rec.report_id, "labels": vec,
                "extras": {"mesh_major": "; ".join(rec.mesh_major)}}
        if root is None:
            rows.append(base | {"id": rec.report_id, "path": ""})
            continue
        for image_id in rec.image_ids:
            short = re.sub(r"^(CXR\d+)_\d+_", r"\1_", image_id)
            rows.append(base | {"id": image_id, "path": str(root / f"{image_id}.png"),
                                "view": views.get(short, "UNKNOWN")})
    where = root if root is not None else Path(str(reports or "torchxrayvision NLMCXR_reports.tgz"))
    filters = [] if root is not None else ["reports only: no image folder given"]
    return _finish("iu", rows, "iu", where, filters, frontal and root is not None, ["mesh_major"])


def _iu_views() -> dict[str, str]:
    """IU image id (``CXR<n>_IM-...``) -> view position, from torchxrayvision's metadata table."""
    try:
        import torchxrayvision as xrv

        path = Path(xrv.__file__).parent / "data" / "nlmcxr_dicom_metadata.csv.gz"
        df = pd.read_csv(path, usecols=["imageid", "View Position"], dtype=str)
    except (ImportError, FileNotFoundError, ValueError):
        return {}
    return dict(zip(df["imageid"], df["View Position"].fillna("UNKNOWN").str.upper()))


ADAPTERS["iu"] = iu
