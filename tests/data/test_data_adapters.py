import math
from pathlib import Path

import numpy as np
import pytest
from conftest import write_png

from cxraug.core.errors import DataError
from cxraug.data import labels as L
from cxraug.data.adapters import load_dataset, resolve_data, sample_root


def test_kermany_index_layout(kermany_fixture):
    ds = load_dataset(kermany_fixture)
    assert ds.name == "kermany" and len(ds) == 24
    y = ds.labels
    pneu, nf = y[:, L.index("Pneumonia")], y[:, L.index("No Finding")]
    assert set(pneu.tolist()) == {0.0, 1.0}
    assert (nf[pneu == 0] == 1).all() and np.isnan(nf[pneu == 1]).all()
    assert np.isnan(y[:, L.index("Edema")]).all()  # Kermany does not label edema
    assert set(ds.table["split"]) == {"train", "test"}
    s = ds.sample(1)
    assert s.image.dtype == np.uint8 and s.image.shape == (32, 32) and s.report is None


def test_kermany_original_folder_layout(tmp_path):
    for split in ("train", "test"):
        write_png(tmp_path / split / "NORMAL" / "IM-0001-0001.jpeg")
        write_png(tmp_path / split / "PNEUMONIA" / "person12_virus_44.jpeg")
        write_png(tmp_path / split / "PNEUMONIA" / "person12_bacteria_45.jpeg")
    ds = load_dataset(tmp_path)
    assert ds.name == "kermany" and len(ds) == 6
    assert sorted(set(ds.table["patient_id"])) == ["IM-0001", "person12"]
    assert sorted(set(ds.table["subtype"])) == ["bacteria", "normal", "virus"]


def test_nih_subset_layout(nih_fixture):
    ds = load_dataset(nih_fixture)
    assert ds.name == "nih14" and len(ds) == 40
    row = ds.table[ds.table["id"] == "00000002_000.png"].iloc[0]  # Effusion|Pneumonia
    assert row["Pleural Effusion"] == 1 and row["Pneumonia"] == 1 and row["Edema"] == 0
    assert math.isnan(row["No Finding"]) and math.isnan(row["Fracture"])
    emph = ds.table[ds.table["id"] == "00000004_000.png"].iloc[0]
    assert emph["Emphysema"] == 1 and "Emphysema" in ds.extra_labels
    assert ds.filters and "frontal" in ds.filters[0]


def test_nih_official_layout(tmp_path):
    write_png(tmp_path / "images_001" / "images" / "00000001_000.png")
    write_png(tmp_path / "images_001" / "images" / "00000001_001.png")
    (tmp_path / "Data_Entry_2017_v2020.csv").write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"
        "00000001_000.png,Cardiomegaly|Effusion,0,1,58,M,PA\n00000001_001.png,No Finding,1,1,58,M,LL\n")
    ds = load_dataset(tmp_path)
    assert len(ds) == 1  # the lateral (LL) view is filtered
    assert ds.table.iloc[0]["Cardiomegaly"] == 1 and ds.paths[0].is_file()
    assert len(load_dataset(tmp_path, frontal=False)) == 2


def test_nih_unknown_finding(tmp_path):
    (tmp_path / "Data_Entry_2017.csv").write_text(
        "Image Index,Finding Labels,Patient ID,View Position\nx.png,Pneumonitis,1,PA\n")
    with pytest.raises(DataError, match="unknown NIH finding 'Pneumonitis'"):
        load_dataset(tmp_path)


def _chexpert_csv(path, rows):
    header = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(L.OBSERVATIONS)
    path.write_text("\n".join([header, *rows]) + "\n")


def test_chexpert_layout(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    write_png(root / "train" / "patient00001" / "study1" / "view1_frontal.jpg")
    write_png(root / "train" / "patient00001" / "study1" / "view2_lateral.jpg")
    write_png(root / "valid" / "patient64541" / "study1" / "view1_frontal.jpg")
    lab = [""] * 14
    lab[L.index("Pneumonia")], lab[L.index("Edema")], lab[L.index("Atelectasis")] = "1.0", "0.0", "-1.0"
    _chexpert_csv(root / "train.csv", [
        "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,F,68,Frontal,AP," + ",".join(lab),
        "CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg,F,68,Lateral,," + ",".join(lab)])
    _chexpert_csv(root / "valid.csv", [
        "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,M,73,Frontal,PA," + ",".join(["0.0"] * 14)])
    ds = load_dataset(root)
    assert ds.name == "chexpert" and len(ds) == 2
    tr = ds.table[ds.table["split"] == "train"].iloc[0]
    assert tr["Pneumonia"] == 1 and tr["Edema"] == 0 and tr["Atelectasis"] == -1 and math.isnan(tr["Fracture"])
    assert tr["patient_id"] == "patient00001" and all(p.is_file() for p in ds.paths)


def test_chexpert_bad_value(tmp_path):
    root = tmp_path / "cx"
    root.mkdir()
    lab = ["2.0"] + [""] * 13
    _chexpert_csv(root / "train.csv", ["cx/train/patient1/s/v.jpg,F,1,Frontal,AP," + ",".join(lab)])
    with pytest.raises(DataError, match="column Enlarged Cardiomediastinum: label value '2.0'"):
        load_dataset(root)


def test_mimic_layout(tmp_path):
    root = tmp_path / "mimic-cxr-jpg"
    study = root / "files" / "p10" / "p10000032" / "s50414267"
    write_png(study / "d1.jpg")
    write_png(study / "d2.jpg")
    (root / "files" / "p10" / "p10000032" / "s50414267.txt").write_text(
        "FINDINGS: No focal consolidation.\nIMPRESSION: No acute process.")
    (root / "mimic-cxr-2.0.0-metadata.csv").write_text(
        "dicom_id,subject_id,study_id,ViewPosition\nd1,10000032,50414267,PA\nd2,10000032,50414267,LATERAL\n")
    lab = ["0.0"] * 13 + ["1.0"]
    (root / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        "subject_id,study_id," + ",".join(L.OBSERVATIONS) + "\n10000032,50414267," + ",".join(lab) + "\n")
    (root / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\nd1,50414267,10000032,validate\nd2,50414267,10000032,validate\n")
    ds = load_dataset(root)
    assert ds.name == "mimic" and len(ds) == 1 and ds.has_reports()
    row = ds.table.iloc[0]
    assert row["No Finding"] == 1 and row["split"] == "val" and "consolidation" in row["report"]


def test_manifest_with_dicom_and_aliases(tmp_path):
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "b.png", seed=1)
    (tmp_path / "manifest.csv").write_text(
        "path,patient_id,view,report,effusion,Pneumonia,site\n"
        "a.png,p1,PA,There is a small effusion.,1,0,north\nb.png,p2,AP,,,-1,south\n")
    ds = load_dataset(tmp_path)
    assert ds.name == "manifest" and len(ds) == 2
    assert ds.table.iloc[0]["Pleural Effusion"] == 1 and ds.table.iloc[1]["Pneumonia"] == -1
    assert math.isnan(ds.table.iloc[1]["Pleural Effusion"])
    assert ds.reports == ["There is a small effusion.", None] and "site" in ds.extra_labels


def test_manifest_wrong_columns(tmp_path):
    (tmp_path / "manifest.csv").write_text("file,label\na.png,1\n")
    with pytest.raises(DataError, match=r"manifest.csv: missing column\(s\) path"):
        load_dataset(tmp_path)


def test_empty_and_missing(tmp_path):
    with pytest.raises(DataError, match="data path not found"):
        load_dataset(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell which dataset"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.csv").write_text("path\n")
    with pytest.raises(DataError, match="has no rows"):
        load_dataset(tmp_path / "m")
    with pytest.raises(DataError, match="unknown dataset kind"):
        load_dataset(tmp_path / "m", kind="padchest2")


def test_embedded_sample_is_real_and_attributed():
    root = sample_root("kermany")
    assert (root / "NOTICE.txt").read_text().count("CC BY 4.0") >= 1
    ds = load_dataset(resolve_data(None))
    assert len(ds) == 410 and ds.name == "kermany"
    nih = load_dataset(resolve_data("sample:nih14"))
    assert len(nih) == 120 and (sample_root("nih14") / "NOTICE.txt").is_file()
    with pytest.raises(DataError, match="unknown embedded sample"):
        resolve_data("sample:mimic")


def test_real_datasets_load(data_root):
    k = load_dataset(data_root / "kermany")
    assert len(k) == 5840 and int((k.labels[:, L.index("Pneumonia")] == 1).sum()) == 4265
    n = load_dataset(data_root / "nih14")
    assert len(n) == 1000 and int((n.labels[:, L.index("Pneumonia")] == 1).sum()) == 500
    assert "Pneumonia" in n.labelled(20)


def test_iu_reports_from_torchxrayvision(tmp_path):
    from cxraug.data.layouts import iu

    ds = iu(None)
    assert len(ds) == 3955 and ds.has_reports()
    assert (ds.labels[:, L.index("No Finding")] == 1).sum() > 2000
    # with an image folder in the Open-i PNG layout: one row per image of each report
    first = ds.table.iloc[0]
    from cxraug.data.iu import read_iu_reports

    rec = read_iu_reports()[0]
    for image_id in rec.image_ids:
        write_png(tmp_path / f"{image_id}.png")
    with_images = iu(tmp_path, frontal=False)
    assert len(with_images) > len(ds)
    rows = with_images.table[with_images.table["patient_id"] == first["patient_id"]]
    assert len(rows) == len(rec.image_ids) and all(Path(p).is_file() for p in rows["path"])
