"""Report text handling: placeholders, sections, sentences, corpora, the IU-Xray reader."""

from __future__ import annotations

import pytest

from cxraug.core.errors import DataError
from cxraug.data.iu import image_to_report, iu_reports_frame, parse_iu_xml, read_iu_reports
from cxraug.data.reports import (
    clean_text,
    has_placeholder,
    labeling_text,
    read_reports,
    split_sections,
    split_sentences,
)

IU_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR42"/>
 <MedlineCitation><Article><Abstract>
  <AbstractText Label="COMPARISON">None.</AbstractText>
  <AbstractText Label="INDICATION">XXXX-year-old with cough</AbstractText>
  <AbstractText Label="FINDINGS">Mild cardiomegaly. There are no XXXX of a pleural effusion.
  </AbstractText>
  <AbstractText Label="IMPRESSION">Normal chest x-XXXX.</AbstractText>
 </Abstract></Article></MedlineCitation>
 <MeSH><major>Cardiomegaly/mild</major><automatic>cardiomegaly</automatic></MeSH>
 <parentImage id="CXR42_IM-0001-1001"><caption>PA</caption></parentImage>
 <parentImage id="CXR42_IM-0001-2001"><caption>Lateral</caption></parentImage>
</eCitation>"""


def test_placeholders_removed_before_text_reaches_a_model():
    raw = "There are no XXXX of a pleural effusion. Normal chest x-XXXX. Pt ___ with xxxx."
    assert has_placeholder(raw)
    text = clean_text(raw)
    assert not has_placeholder(text)
    assert "XXXX" not in text and "___" not in text and "xxxx" not in text
    assert text == "There are no of a pleural effusion. Normal chest x. Pt with."
    assert clean_text(text) == text  # idempotent
    assert clean_text("Box size  x   extra") == "Box size x extra"  # real words with x stay
    assert clean_text(None) == ""


def test_sections_split_and_canonical_names():
    s = split_sections("EXAMINATION: CHEST PA AND LAT\nINDICATION: ___F with cough\n"
                       "COMPARISON: None.\nFINDINGS: Heart size is normal.\n\n"
                       "IMPRESSION: No acute process.")
    assert s == {"examination": "CHEST PA AND LAT", "indication": "F with cough",
                 "comparison": "None.", "findings": "Heart size is normal.",
                 "impression": "No acute process."}
    s = split_sections("Clinical history: fever. Findings: small effusion. Conclusion: effusion.")
    assert s["history"] == "fever." and s["impression"] == "effusion."
    assert split_sections("No headers here.") == {"preamble": "No headers here."}


def test_labeling_text_reads_findings_and_impression_only():
    text = "INDICATION: rule out pneumonia. FINDINGS: Lungs clear. IMPRESSION: Normal."
    assert labeling_text(text) == "Lungs clear. Normal."
    assert labeling_text("HISTORY: pneumonia. Heart normal.") == ""
    assert labeling_text("Heart normal. No effusion.") == "Heart normal. No effusion."


def test_sentence_splitting():
    text = "1. Mild cardiomegaly. 2. No effusion vs. atelectasis. Nodule 1.5 cm.\nNo pneumothorax?"
    assert split_sentences(text) == ["Mild cardiomegaly.", "No effusion vs. atelectasis.",
                                     "Nodule 1.5 cm.", "No pneumothorax?"]
    assert split_sentences("") == []


def test_read_reports_folder_and_csv(tmp_path):
    folder = tmp_path / "reports"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("No effusion.")
    (folder / "sub" / "b.txt").write_text("Mild cardiomegaly.")
    (folder / "notes.md").write_text("ignored")
    assert read_reports(folder) == (["a", "sub/b"], ["No effusion.", "Mild cardiomegaly."])
    csv = tmp_path / "r.csv"
    csv.write_text('id,text\nx1,"No effusion, no pneumothorax."\nx2,Cardiomegaly.\n')
    assert read_reports(csv, "text") == (["x1", "x2"], ["No effusion, no pneumothorax.",
                                                          "Cardiomegaly."])
    with pytest.raises(DataError, match="no column 'report'"):
        read_reports(csv)
    with pytest.raises(DataError, match="not found"):
        read_reports(tmp_path / "missing.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .txt report files"):
        read_reports(tmp_path / "empty")


def test_parse_iu_xml_record(tmp_path):
    r = parse_iu_xml(IU_XML)
    assert (r.report_id, r.iu_id) == ("CXR42", 42)
    assert r.findings == "Mild cardiomegaly. There are no of a pleural effusion."
    assert r.impression == "Normal chest x."
    assert r.indication == "-year-old with cough"
    assert r.mesh_major == ("Cardiomegaly/mild",) and r.mesh_automatic == ("cardiomegaly",)
    assert r.image_ids == ("CXR42_IM-0001-1001", "CXR42_IM-0001-2001")
    assert r.text == r.findings + " " + r.impression and not r.is_normal
    raw = parse_iu_xml(IU_XML, clean=False)
    assert "XXXX" in raw.findings
    # a folder of XMLs works like the archive
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "42.xml").write_text(IU_XML)
    assert read_iu_reports(tmp_path / "x") == [r]
    with pytest.raises(DataError, match="not found"):
        read_iu_reports(tmp_path / "nope.tgz")
    with pytest.raises(DataError, match="not valid XML"):
        parse_iu_xml("<eCitation>", "bad.xml")


def test_real_iu_reports_from_torchxrayvision():
    reports = read_iu_reports()
    assert len(reports) == 3955
    assert [r.iu_id for r in reports] == sorted(r.iu_id for r in reports)
    assert not any(has_placeholder(r.text) for r in reports)
    assert sum(r.is_normal for r in reports) > 1000
    first = reports[0]
    assert first.report_id == "CXR1" and first.image_ids == ("CXR1_1_IM-0001-3001",
                                                             "CXR1_1_IM-0001-4001")
    frame = iu_reports_frame(reports[:10])
    assert list(frame.columns[:3]) == ["report_id", "iu_id", "findings"] and len(frame) == 10
    assert image_to_report(reports[:1]) == {"CXR1_1_IM-0001-3001": "CXR1",
                                            "CXR1_1_IM-0001-4001": "CXR1"}
