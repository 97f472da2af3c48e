"""Quality gates (fidelity, memorisation) and the synthetic DICOM writer, on small arrays."""

import numpy as np
import pytest
import torch

from cxraug.classify.model import Classifier
from cxraug.cohorts.config import GateConfig
from cxraug.cohorts.gates import FidelityGate, Gates, MemorisationGate, pixel_embedding
from cxraug.core.errors import CxraugError
from cxraug.data import labels as L


def _xrays(n, seed, size=32):
    """Smooth random 'radiographs': low-frequency noise, so images differ but look alike."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, 6, 6, generator=g)
    x = torch.nn.functional.interpolate(low, size=size, mode="bicubic", align_corners=False)
    x = x + 0.05 * torch.rand(n, 1, size, size, generator=g)
    x = (x - x.amin((2, 3), keepdim=True)) / (x.amax((2, 3), keepdim=True) - x.amin((2, 3), keepdim=True))
    return (x[:, 0] * 255).round().to(torch.uint8).numpy()


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return Classifier("resnet10t", ["Pneumonia", "No Finding"], image_size=32).eval()


def _val_labels(n):
    y = np.full((n, L.N_OBS), np.nan, np.float32)
    y[:, L.index("Pneumonia")] = np.arange(n) % 2
    return L.derive_no_finding(y)


def test_fidelity_thresholds_keep_the_requested_share_of_real_images(classifier):
    images, y = _xrays(40, 1), _val_labels(40)
    gate = FidelityGate.calibrate(classifier, ["pneumonia"], images, y, GateConfig(recall=0.8))
    scores = classifier.predict_proba(images)[:, 0]
    pos, neg = scores[y[:, 6] == 1], scores[y[:, 6] == 0]
    assert (pos >= gate.positive["Pneumonia"]).mean() >= 0.8
    assert (neg <= gate.negative["Pneumonia"]).mean() >= 0.95
    recs = gate.check(images[y[:, 6] == 1], ["pneumonia"] * 20)
    assert sum(r["fidelity"] == "pass" for r in recs) >= 16
    assert recs[0]["fidelity_label"] == "pneumonia"
    neg_recs = gate.check(images[y[:, 6] == 0], ["negative"] * 20)
    assert sum(r["fidelity"] == "pass" for r in neg_recs) >= 19
    assert neg_recs[0]["fidelity_label"] == "not pneumonia"


def test_fidelity_gate_rejects_everything_when_thresholds_are_impossible(classifier):
    images, y = _xrays(10, 2), _val_labels(10)
    cfg = GateConfig(thresholds={"Pneumonia": 1.01})  # no probability reaches it
    gate = FidelityGate.calibrate(classifier, ["pneumonia"], images, y, cfg)
    out = Gates(fidelity=gate).check(images, ["pneumonia"] * 10)
    assert all(not r["accepted"] and r["reason"] == "fidelity" for r in out)
    assert all(r["memorisation"] == "not run" for r in out)


def test_fidelity_gate_needs_the_labels_and_val_positives(classifier):
    images, y = _xrays(6, 3), _val_labels(6)
    with pytest.raises(CxraugError, match="but not pleural effusion"):
        FidelityGate.calibrate(classifier, ["effusion"], images, y, GateConfig())
    y[:, L.index("Pneumonia")] = 0
    with pytest.raises(CxraugError, match="no real positive pneumonia"):
        FidelityGate.calibrate(classifier, ["pneumonia"], images, y, GateConfig())


@pytest.mark.parametrize("use_classifier", [False, True])
def test_memorisation_gate_rejects_copies_of_training_images(classifier, use_classifier):
    train, val, fresh = _xrays(60, 10), _xrays(20, 11), _xrays(8, 12)
    embed = classifier.embed if use_classifier else pixel_embedding(16)
    gate = MemorisationGate(train, [f"t{i}" for i in range(60)], embed, "test", GateConfig(top_k=5))
    cal = gate.calibrate(val)
    assert 0 < gate.threshold < 1 and cal["n_val"] == 20
    copies = train[[3, 17, 42]]
    out = gate.check(copies)
    assert [r["memorisation"] for r in out] == ["fail"] * 3
    assert [r["nn_id"] for r in out] == ["t3", "t17", "t42"]
    assert all(r["nn_ssim"] == pytest.approx(1.0) for r in out)
    # a copy with mild noise is still caught; unseen images of the same kind mostly pass
    noisy = np.clip(copies.astype(int) + np.random.default_rng(0).integers(-3, 4, copies.shape), 0, 255)
    assert all(r["memorisation"] == "fail" for r in gate.check(noisy.astype(np.uint8)))
    assert sum(r["memorisation"] == "pass" for r in gate.check(fresh)) >= 6
    combined = Gates(memorisation=gate).check(np.concatenate([copies[:1], fresh[:1]]), ["a", "b"])
    assert combined[0]["reason"] == "memorisation" and not combined[0]["accepted"]
    assert combined[1]["accepted"] and combined[1]["fidelity"] == "not run"


def test_memorisation_gate_is_batch_independent():
    train = _xrays(30, 20)
    gate = MemorisationGate(train, [str(i) for i in range(30)], pixel_embedding(16), "px", GateConfig())
    gate.threshold = 0.9
    images = _xrays(7, 21)
    one = [r for i in range(7) for r in gate.check(images[i:i + 1])]
    assert one == gate.check(images)


def test_dicom_says_it_is_synthetic(tmp_path):
    import pydicom

    from cxraug.cohorts.store import write_image
    from cxraug.data.transforms import load_dicom

    img = _xrays(1, 30)[0]
    row = {"index": 7, "seed": 123, "target": "pneumonia", "generator": "abcdef0123456789"}
    path = tmp_path / "000007.dcm"
    write_image(path, img, "dicom", row, "abcdef0123456789")
    ds = pydicom.dcmread(path)
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"] and ds.BurnedInAnnotation == "NO"
    assert "SYNTHETIC" in ds.SeriesDescription and "SYNTHETIC" in ds.ImageComments
    assert str(ds.PatientName).startswith("SYNTHETIC") and ds.PatientID.startswith("SYNTH-")
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsStored == 8
    assert ds.SOPInstanceUID != ds.SeriesInstanceUID != ds.StudyInstanceUID
    np.testing.assert_array_equal(ds.pixel_array, img)
    np.testing.assert_array_equal(load_dicom(path), img)  # img spans 0..255: no rescaling
    # regenerating the same image gives the same file (UIDs derive from cohort and index)
    write_image(tmp_path / "again.dcm", img, "dicom", row, "abcdef0123456789")
    assert (tmp_path / "again.dcm").read_bytes() == path.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))
