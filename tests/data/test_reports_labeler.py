"""Golden sentences for the embedded rule labeler (negation, uncertainty, scope, No Finding)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from cxraug.core.errors import CxraugError
from cxraug.data import labels as L
from cxraug.data.labeler import RuleLabeler, make_labeler, write_labels_csv

P, N, U = L.POSITIVE, L.NEGATIVE, L.UNCERTAIN

# (report text, {observation: expected raw value}); observations not listed are not checked,
# except that "-" lists observations that must stay blank (not mentioned).
GOLDEN = [
    ("No pneumothorax.", {"Pneumothorax": N}),
    ("There is no evidence of pneumothorax.", {"Pneumothorax": N}),
    ("Pneumothorax is not seen.", {"Pneumothorax": N}),
    ("Cannot exclude pneumonia.", {"Pneumonia": U}),
    ("Pneumonia cannot be excluded.", {"Pneumonia": U}),
    ("May represent atelectasis.", {"Atelectasis": U}),
    ("Right basilar opacity, possibly atelectasis.", {"Lung Opacity": P, "Atelectasis": U}),
    ("Bibasilar opacities, likely atelectasis.", {"Lung Opacity": P, "Atelectasis": P}),
    ("Atelectasis versus pneumonia.", {"Atelectasis": U, "Pneumonia": U}),
    ("no effusion. mild cardiomegaly.", {"Pleural Effusion": N, "Cardiomegaly": P}),
    ("No pneumothorax but there is a small left effusion.", {"Pneumothorax": N,
                                                            "Pleural Effusion": P}),
    ("No focal consolidation, pleural effusion, or pneumothorax.",
     {"Consolidation": N, "Pleural Effusion": N, "Pneumothorax": N}),
    ("No focal consolidation, large pleural effusion, or pneumothorax is identified.",
     {"Consolidation": N, "Pleural Effusion": N, "Pneumothorax": N}),
    ("Cardiomegaly without pulmonary edema.", {"Cardiomegaly": P, "Edema": N}),
    ("There is no focal airspace disease to suggest pneumonia.", {"Lung Opacity": N,
                                                                 "Pneumonia": N}),
    ("No change in small left pleural effusion.", {"Pleural Effusion": P}),
    ("The lungs are clear.", {"Lung Opacity": N, "Consolidation": N}),
    ("Heart size is normal.", {"Cardiomegaly": N}),
    ("The heart is not enlarged.", {"Cardiomegaly": N}),
    ("The heart is mildly enlarged.", {"Cardiomegaly": P}),
    ("Borderline heart size.", {"Cardiomegaly": U}),
    ("The cardiomediastinal silhouette is within normal limits.",
     {"Enlarged Cardiomediastinum": N}),
    ("Widened mediastinum.", {"Enlarged Cardiomediastinum": P}),
    ("Calcified granuloma in the right upper lobe.", {"-": ["Lung Lesion", "Lung Opacity"]}),
    ("Pericardial effusion.", {"-": ["Pleural Effusion"]}),
    ("The findings are consistent with a consistent stenting pattern.", {"-": ["Support Devices"]}),
    ("Left chest wall pacemaker with leads in the right ventricle.", {"Support Devices": P}),
    ("Median sternotomy wires.", {"Support Devices": P}),
    ("Old healed right rib fractures.", {"Fracture": P}),
    ("Age-indeterminate compression fracture.", {"Fracture": P}),
    ("Right upper lobe pulmonary nodule.", {"Lung Lesion": P}),
    ("Residuals of prior granulomatous infection.", {"-": ["Pneumonia"]}),
    ("Mild pulmonary vascular congestion.", {"Edema": P}),
    ("Apical pleural thickening.", {"Pleural Other": P}),
    ("Small right pneumothorax?", {"Pneumothorax": U}),
    ("INDICATION: rule out pneumonia. FINDINGS: Lungs clear. IMPRESSION: Normal chest.",
     {"Pneumonia": N, "No Finding": P}),
]


@pytest.mark.parametrize("text,expected", GOLDEN, ids=[g[0][:40] for g in GOLDEN])
def test_golden_sentences(text, expected):
    v = RuleLabeler().label_text(text)
    for obs, want in expected.items():
        if obs == "-":
            for o in want:
                assert np.isnan(v[L.index(o)]), f"{o} should not be mentioned in {text!r}"
        else:
            got = v[L.index(obs)]
            assert got == want, f"{obs}: got {got}, want {want} for {text!r}"


def test_no_finding_follows_chexpert_semantics():
    lab = RuleLabeler()
    nf = L.index("No Finding")
    assert lab.label_text("No acute cardiopulmonary abnormality.")[nf] == P
    assert lab.label_text("No pneumothorax. Heart size normal.")[nf] == P
    # devices do not break No Finding; positives and uncertains do; never 0
    assert lab.label_text("Pacemaker in place. Lungs clear.")[nf] == P
    assert np.isnan(lab.label_text("Mild cardiomegaly.")[nf])
    assert np.isnan(lab.label_text("Possible small effusion.")[nf])
    labels = lab.label(["Mild cardiomegaly.", "No effusion.", ""])
    assert labels.shape == (3, L.N_OBS) and labels.dtype == np.float32
    assert not (labels[:, nf] == N).any()
    np.testing.assert_array_equal(labels[:2], L.derive_no_finding(labels[:2]))
    assert np.isnan(labels[2]).all()  # an empty report is unlabelled, not No Finding


def test_aggregation_positive_beats_uncertain_beats_negative():
    lab = RuleLabeler()
    pe = L.index("Pleural Effusion")
    assert lab.label_text("No pleural effusion. Small left pleural effusion.")[pe] == P
    assert lab.label_text("No pleural effusion. Possible small effusion.")[pe] == U
    assert lab.label_text("No pleural effusion. No effusion.")[pe] == N


def test_mentions_point_at_the_words():
    mentions = RuleLabeler().mentions("FINDINGS: No effusion. Mild cardiomegaly.")
    got = {(m.observation, m.text.lower(), m.value) for m in mentions}
    assert ("Pleural Effusion", "effusion", N) in got and ("Cardiomegaly", "cardiomegaly", P) in got


def test_write_labels_csv_coding(tmp_path):
    labels = np.stack([L.vector(positive=["Cardiomegaly"], negative=["Pneumothorax"],
                                uncertain=["Edema"]), L.empty_vector()])
    path = write_labels_csv(tmp_path / "l.csv", ["a", "b"], labels)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["id", *L.OBSERVATIONS]
    a = dict(zip(rows[0], rows[1]))
    assert (a["Cardiomegaly"], a["Pneumothorax"], a["Edema"], a["Fracture"]) == ("1.0", "0.0",
                                                                                 "-1.0", "")
    assert rows[2] == ["b"] + [""] * L.N_OBS


def test_make_labeler_names():
    assert make_labeler("rule").name == "rule"
    with pytest.raises(CxraugError, match="unknown labeler"):
        make_labeler("gpt")
