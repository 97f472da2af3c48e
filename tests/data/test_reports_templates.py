"""Fixed Diff-CXR templates, mined templates and the prompt builder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxraug.core.errors import DataError
from cxraug.data import labels as L
from cxraug.data.labeler import RuleLabeler
from cxraug.data.templates import PromptBuilder, TemplateBank, mine_templates, paper_hint

CORPUS = [
    "FINDINGS: Mild cardiomegaly. No pneumothorax. IMPRESSION: Mild cardiomegaly.",
    "FINDINGS: The heart is mildly enlarged. No pleural effusion. IMPRESSION: Cardiomegaly.",
    ("FINDINGS: Small left pleural effusion. Heart size is normal. IMPRESSION: Small left "
    "pleural effusion."),
    ("FINDINGS: The lungs are clear. Heart size is normal. No pneumothorax. IMPRESSION: No acute "
    "cardiopulmonary abnormality."),
    ("FINDINGS: The lungs are clear. No XXXX of pneumothorax. IMPRESSION: No acute "
    "cardiopulmonary abnormality."),
    ("FINDINGS: Stable 2 cm nodule compared to prior. Possible small effusion. IMPRESSION: "
    "Nodule unchanged since 2010."),
]


def test_paper_hint_fixed_templates():
    assert paper_hint(L.vector()) == "There is no finding."
    v = L.vector(positive=["Pleural Effusion", "Atelectasis", "Support Devices"],
                 negative=["Pneumothorax"], uncertain=["Edema"])
    # label order, DKIM diseases only, positives only
    assert paper_hint(v) == "There is atelectasis. There is pleural effusion."
    v = L.vector(positive=["No Finding", "Pleural Other"])
    assert paper_hint(v) == "There is no finding."
    assert PromptBuilder("paper").build(L.vector(positive=["Cardiomegaly"]), seed=3) == \
        "There is cardiomegaly."


def test_mining_keeps_single_observation_sentences(tmp_path):
    bank = mine_templates(CORPUS, top_k=5)
    texts = {o: [e["text"] for e in es] for o, es in bank.positive.items()}
    assert texts["Cardiomegaly"][0] == "Mild cardiomegaly."  # most frequent first (count 2)
    assert bank.positive["Cardiomegaly"][0]["count"] == 2
    assert "The heart is mildly enlarged." in texts["Cardiomegaly"]
    assert texts["Pleural Effusion"] == ["Small left pleural effusion."]
    assert [e["text"] for e in bank.negative["Pneumothorax"]] == ["No pneumothorax."]
    normal = [e["text"] for e in bank.normal]
    assert set(normal[:2]) == {"No acute cardiopulmonary abnormality.", "The lungs are clear."}
    everything = json.dumps(bank.to_json())
    # placeholders, numbers, comparisons and uncertain sentences are never kept
    for bad in ("XXXX", "2 cm", "since", "Possible"):
        assert bad not in everything
    clear = next(e for e in bank.normal if e["text"] == "The lungs are clear.")
    assert "Lung Opacity" in clear["negates"]
    # round trip through the file format
    path = bank.save(tmp_path / "bank.json")
    again = TemplateBank.load(path)
    assert again.to_json() == json.loads(json.dumps(bank.to_json()))


def test_prompt_builder_is_deterministic_and_consistent(tmp_path):
    bank_path = mine_templates(CORPUS * 3, top_k=5).save(tmp_path / "bank.json")
    pb = PromptBuilder("mined", templates_path=bank_path, n_negatives=2)
    target = L.vector(positive=["Cardiomegaly"], negative=["Pneumothorax", "Pleural Effusion"])
    texts = {pb.build(target, seed=s) for s in range(20)}
    assert all(pb.build(target, seed=7) == pb.build(target, seed=7) for _ in range(3))
    assert len(texts) > 1  # the seed matters
    lab = RuleLabeler()
    for t in texts:
        got = lab.label_text(t)
        assert got[L.index("Cardiomegaly")] == L.POSITIVE, t
        assert got[L.index("Pneumothorax")] != L.POSITIVE
    # a normal target reads normal, and never negates what is positive
    normal = pb.build(L.vector(positive=["No Finding"]), seed=1)
    assert lab.label_text(normal)[L.index("No Finding")] == L.POSITIVE
    opacity = L.vector(positive=["Lung Opacity"], negative=["Pneumothorax"])
    for s in range(10):
        assert "lungs are clear" not in pb.build(opacity, seed=s).lower()
    # an observation with no mined phrasing falls back to the paper's sentence
    assert "There is pneumothorax." in pb.build(L.vector(positive=["Pneumothorax"]), seed=0)
    rows = np.stack([target, opacity])
    assert pb.build_many(rows, [5, 6]) == [pb.build(target, 5), pb.build(opacity, 6)]


def test_shipped_iu_bank_loads_and_builds():
    bank = TemplateBank.load()
    assert bank.meta["n_reports"] == 3955 and "CC BY-NC-ND" in bank.meta["license"]
    assert {"Cardiomegaly", "Pleural Effusion", "Atelectasis"} <= set(bank.positive)
    assert all(e["count"] >= 1 and e["text"] for es in bank.positive.values() for e in es)
    pb = PromptBuilder()
    text = pb.build(L.vector(positive=["Pleural Effusion", "Cardiomegaly"],
                             negative=["Pneumothorax"]), seed=11)
    got = RuleLabeler().label_text(text)
    assert got[L.index("Pleural Effusion")] == L.POSITIVE
    assert got[L.index("Cardiomegaly")] == L.POSITIVE


def test_bad_template_inputs(tmp_path):
    with pytest.raises(DataError, match="not found"):
        PromptBuilder(templates_path=tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{"positive": {"Heartache": []}, "negative": {}, '
                                       '"normal": []}')
    with pytest.raises(L.UnknownLabelError, match="Heartache"):
        TemplateBank.load(tmp_path / "bad.json")
    with pytest.raises(DataError, match="unknown"):
        PromptBuilder(source="llm")
