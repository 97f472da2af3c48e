import math

import numpy as np
import pytest

from cxraug.data import labels as L


def test_observation_order_is_chexbert():
    assert L.OBSERVATIONS[0] == "Enlarged Cardiomediastinum"
    assert L.OBSERVATIONS[6] == "Pneumonia"
    assert L.OBSERVATIONS[9] == "Pleural Effusion"
    assert L.OBSERVATIONS[-1] == "No Finding"
    assert len(L.OBSERVATIONS) == 14
    assert len(L.DKIM_DISEASES) == 11 and "Support Devices" not in L.DKIM_DISEASES


@pytest.mark.parametrize("name,expected", [("pneumonia", "Pneumonia"), ("PLEURAL_EFFUSION", "Pleural Effusion"),
                                           ("effusion", "Pleural Effusion"), ("No Finding", "No Finding"),
                                           ("lung-opacity", "Lung Opacity")])
def test_canonical_names(name, expected):
    assert L.canonical(name) == expected


def test_unknown_label_lists_valid_names():
    with pytest.raises(L.UnknownLabelError, match="valid labels are: .*pneumonia"):
        L.canonical("pneumonitis")
    with pytest.raises(L.UnknownLabelError):
        L.parse_label_list(" , ")


def test_uncertainty_policies():
    raw = L.vector(positive=["Pneumonia"], negative=["Edema"], uncertain=["Atelectasis"])
    ign = L.apply_policy(raw, "ignore")
    assert math.isnan(ign[L.index("Atelectasis")]) and ign[L.index("Pneumonia")] == 1
    assert L.apply_policy(raw, "zeros")[L.index("Atelectasis")] == 0
    assert L.apply_policy(raw, "ones")[L.index("Atelectasis")] == 1
    # not mentioned stays missing under every policy, and the input is not modified
    for p in L.UncertaintyPolicy:
        assert math.isnan(L.apply_policy(raw, p)[L.index("Fracture")])
    assert raw[L.index("Atelectasis")] == -1


def test_no_finding_derivation_follows_chexpert():
    v = L.derive_no_finding(L.vector(positive=["Support Devices"], negative=["Edema"]))
    assert v[L.index("No Finding")] == 1  # support devices do not count as a finding
    v = L.derive_no_finding(L.vector(uncertain=["Pneumonia"]))
    assert math.isnan(v[L.index("No Finding")])  # blank, never 0
    batch = np.stack([L.vector(), L.vector(positive=["Edema"])])
    assert L.derive_no_finding(batch)[:, -1].tolist()[0] == 1


def test_nih_mapping_merges_and_drops():
    src = {n: 0.0 for n in L.NIH_LABELS}
    src.update({"Mass": 1.0, "Effusion": 1.0, "Emphysema": 1.0})
    v = L.map_labels(src, "nih")
    assert v[L.index("Lung Lesion")] == 1  # Mass or Nodule
    assert v[L.index("Pleural Effusion")] == 1
    assert v[L.index("Pneumonia")] == 0
    assert math.isnan(v[L.index("Fracture")])  # NIH does not label fractures
    with pytest.raises(L.UnknownLabelError, match="unknown nih label"):
        L.map_labels({"Pneumonitis": 1.0}, "nih")


def test_xrv_names_all_mapped():
    import torchxrayvision as xrv

    for name in xrv.datasets.default_pathologies:
        assert name in L.XRV_TO_CHEXPERT, name


def test_check_raw_rejects_bad_values():
    with pytest.raises(ValueError, match="1, 0, -1 or blank"):
        L.check_raw(np.full(14, 2.0))
    with pytest.raises(ValueError, match="14 label columns"):
        L.check_raw(np.zeros(3))
