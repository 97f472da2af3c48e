"""``cxraug label`` and ``cxraug label-templates`` on small inputs, and their user errors."""

from __future__ import annotations

import csv
import json

import pytest

from cxraug.cli.main import main
from cxraug.data import labels as L


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "reports"
    d.mkdir()
    (d / "r1.txt").write_text("FINDINGS: No effusion.\nMild cardiomegaly.\n"
                              "IMPRESSION: Cardiomegaly.")
    (d / "r2.txt").write_text("INDICATION: pneumonia?\nFINDINGS: Lungs clear. No pneumothorax.")
    (d / "r3.txt").write_text("Cannot exclude pneumonia. There are no XXXX of effusion.")
    return d


def _rows(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_label_folder(folder, tmp_path):
    out = tmp_path / "labels.csv"
    assert main(["label", str(folder), "--out", str(out)]) == 0
    rows = _rows(out)
    assert list(rows[0]) == ["id", *L.OBSERVATIONS]
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == {"r1", "r2", "r3"}
    assert by_id["r1"]["Cardiomegaly"] == "1.0" and by_id["r1"]["Pleural Effusion"] == "0.0"
    assert by_id["r1"]["No Finding"] == "" and by_id["r1"]["Fracture"] == ""
    assert by_id["r2"]["Pneumonia"] != "-1.0"  # the indication is not labelled
    assert by_id["r2"]["Pneumothorax"] == "0.0" and by_id["r2"]["No Finding"] == "1.0"
    assert by_id["r3"]["Pneumonia"] == "-1.0" and by_id["r3"]["Pleural Effusion"] == "0.0"


def test_label_csv_with_text_column(tmp_path):
    src = tmp_path / "reports.csv"
    src.write_text('study,impression\ns1,"Small right pneumothorax."\ns2,"Normal chest."\n')
    out = tmp_path / "out" / "labels.csv"
    assert main(["label", str(src), "--text-column", "impression", "--id-column", "study",
                 "--out", str(out)]) == 0
    rows = _rows(out)
    assert [r["id"] for r in rows] == ["s1", "s2"]
    assert rows[0]["Pneumothorax"] == "1.0" and rows[1]["No Finding"] == "1.0"


@pytest.mark.parametrize("case", ["missing", "no_column", "empty", "exists", "both", "neither"])
def test_label_bad_inputs_are_one_line_errors(case, folder, tmp_path, capsys):
    out = tmp_path / "labels.csv"
    src = tmp_path / "r.csv"
    src.write_text("id,text\na,No effusion.\n")
    (tmp_path / "empty").mkdir()
    args = {"missing": [str(tmp_path / "nope")], "no_column": [str(src)],
            "empty": [str(tmp_path / "empty")], "exists": [str(folder)],
            "both": [str(folder), "--iu"], "neither": []}[case]
    if case == "exists":
        out.write_text("keep me")
    code = main(["label", *args, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and len(err.splitlines()) == 1, err
    if case == "exists":
        assert out.read_text() == "keep me" and "--overwrite" in err
        assert main(["label", *args, "--out", str(out), "--overwrite"]) == 0
        assert out.read_text() != "keep me"
    elif case == "no_column":
        assert "--text-column" in err and "'report'" in err


def test_label_templates_from_folder(folder, tmp_path):
    out = tmp_path / "bank.json"
    assert main(["label-templates", str(folder), "--out", str(out), "--top-k", "3"]) == 0
    bank = json.loads(out.read_text())
    assert bank["meta"]["top_k"] == 3
    assert [e["text"] for e in bank["positive"]["Cardiomegaly"]][:1] == ["Mild cardiomegaly."]
    assert main(["label-templates", str(folder), "--out", str(out)]) == 2  # exists


@pytest.mark.slow
def test_label_iu_reports(tmp_path):
    out = tmp_path / "iu.csv"
    assert main(["label", "--iu", "--out", str(out)]) == 0
    rows = _rows(out)
    assert len(rows) == 3955 and next(iter(rows[0])) == "report_id"
    assert rows[0]["report_id"] == "CXR1"
    assert rows[0]["No Finding"] == "1.0"
