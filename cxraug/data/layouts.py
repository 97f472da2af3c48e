"""Adapters for the public chest X-ray datasets as downloaded: Kermany, NIH ChestX-ray14,
CheXpert, MIMIC-CXR-JPG and IU-Xray. Each documents the layouts it reads and the filters it
applies; :func:`cxraug.data.adapters.load_dataset` picks one."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from cxraug.core.errors import DataError
from cxraug.data import labels as L
from cxraug.data.datasets import CXRDataset
from cxraug.data.iu import read_iu_reports
from cxraug.data.labeler import RuleLabeler
from cxraug.data.tables import IMAGE_SUFFIXES, chexpert_value, finish_dataset, read_csv

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
            pneu = chexpert_value(r["pneumonia"], where)
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
    return finish_dataset("kermany", rows, "kermany", root, [], False, ["subtype"],
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
    return finish_dataset("nih14", rows, "nih14", root, [], frontal, extras, table_file)


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
            vec = np.array([chexpert_value(r[o], f"{csv}: row {i + 2}, column {o}") for o in L.OBSERVATIONS],
                           dtype=np.float32)
            rows.append({"id": r["Path"], "path": str(path), "patient_id": m.group(0) if m else r["Path"],
                         "view": view, "split": split, "labels": vec})
    return finish_dataset("chexpert", rows, "chexpert", root, [], frontal, inside=root.parent)


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
            vec = np.array([chexpert_value(rec[o], f"{label_path}: study {study}, column {o}")
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
    return finish_dataset("mimic", rows, "mimic", root, [], frontal, table_file=split_path)


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
    return finish_dataset("iu", rows, "iu", where, filters, frontal and root is not None, ["mesh_major"])


def _iu_views() -> dict[str, str]:
    """IU image id (``CXR<n>_IM-...``) -> view position, from torchxrayvision's metadata table."""
    try:
        import torchxrayvision as xrv

        path = Path(xrv.__file__).parent / "data" / "nlmcxr_dicom_metadata.csv.gz"
        df = pd.read_csv(path, usecols=["imageid", "View Position"], dtype=str)
    except (ImportError, FileNotFoundError, ValueError):
        return {}
    return dict(zip(df["imageid"], df["View Position"].fillna("UNKNOWN").str.upper()))
