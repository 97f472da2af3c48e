"""Generative metrics (FID, KID, precision/recall, density/coverage, SSIM diversity) and cxraug eval."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxraug.cli.main import main
from cxraug.core.errors import WeightsError
from cxraug.data import labels as L
from cxraug.experiments.quality import extractors as X
from cxraug.metrics import generative as G


def test_fid_self_zero_and_mean_shift_is_squared_distance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 4))
    assert G.fid(x, x) == pytest.approx(0.0, abs=1e-6)
    # equal covariances: the trace term vanishes and FID = ||mu1 - mu2||^2
    mu, cov = np.zeros(4), np.diag([1.0, 2.0, 0.5, 3.0])
    assert G.frechet_distance(mu, cov, mu + np.array([1, 2, 0, 0]), cov) == pytest.approx(5.0)
    # a different covariance adds tr(s1 + s2 - 2 sqrt(s1 s2)) = 1 + 4 - 4 = 1 (for 1-d: (1 - 2)^2)
    assert G.frechet_distance(np.zeros(1), np.eye(1), np.zeros(1), 4 * np.eye(1)) == pytest.approx(1.0)
    near, far = G.fid(x, rng.normal(0.2, 1, (2000, 4))), G.fid(x, rng.normal(2.0, 1, (2000, 4)))
    assert near < far and far == pytest.approx(16.0, rel=0.1)


def test_kid_near_zero_for_same_distribution_and_positive_for_shift():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    mean, std = G.kid(a, b, subsets=20, subset_size=100)
    assert abs(mean) < 0.02 and std >= 0
    assert G.kid(a, b + 1.5, subsets=20, subset_size=100)[0] > 10 * max(abs(mean), 1e-3)


def test_precision_recall_density_coverage():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(200, 5)).astype(np.float32)
    same = G.manifold_metrics(a, a.copy())
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] >= 1.0  # each point lies in its own ball and its k neighbours'
    far = G.manifold_metrics(a, a + 100)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # synthetic set collapsed onto a corner of the real one: precise but low recall
    b = a[:, :2]  # low dimension keeps the synthetic k-NN balls local
    mode = G.manifold_metrics(b, b[np.argsort(b[:, 0])[:40]])
    assert mode["precision"] == 1.0 and mode["recall"] < 0.4 and mode["coverage"] < 0.4


def test_ssim_diversity_duplicates_score_higher():
    rng = np.random.default_rng(3)
    varied = rng.integers(0, 256, (10, 32, 32), dtype=np.uint8)
    dup = np.repeat(varied[:1], 10, axis=0)
    groups = np.array(["a"] * 5 + ["b"] * 5)
    d_var, d_dup = G.ssim_diversity(varied, groups, pairs=10), G.ssim_diversity(dup, groups, pairs=10)
    assert d_dup["mean_pairwise_ssim"] == pytest.approx(1.0)
    assert d_var["mean_pairwise_ssim"] < 0.5 and set(d_var["per_group"]) == {"a", "b"}


def test_missing_or_bad_inception_weights_are_one_line_errors(tmp_path):
    with pytest.raises(WeightsError, match="never downloads"):
        X.make_extractor("inception", inception_weights=tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="never downloads") as e:
        X.make_extractor("inception", inception_weights=bad)
    assert "\n" not in str(e.value)
    with pytest.raises(WeightsError, match="file not found"):
        X.make_extractor("xrv")
    pickled = tmp_path / "densenet121-res224-all.pt"
    pickled.write_bytes(b"pickled model")
    with pytest.raises(WeightsError, match="never unpickled") as e:
        X.make_extractor("xrv", xrv_weights=pickled)
    assert "\n" not in str(e.value)
    wrong = tmp_path / "wrong.safetensors"
    import torch
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(wrong))
    with pytest.raises(WeightsError, match="not a torchxrayvision DenseNet"):
        X.make_extractor("xrv", xrv_weights=wrong)


def test_inception_extractor_from_local_weights(tmp_path):
    """A randomly initialised InceptionV3 saved like torch-fidelity's file stands in for the real
    weights (which are never downloaded): the extractor loads it and gives pool3 features."""
    from unittest import mock

    import torch
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    torch.manual_seed(0)
    with mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None), \
            mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}):
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(net.state_dict(), tmp_path / X.INCEPTION_FILE)
    embed, info = X.make_extractor("inception", inception_weights=tmp_path / X.INCEPTION_FILE)
    x = np.random.default_rng(7).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    f = embed(np.concatenate([x, x[:1]]))
    assert f.shape == (4, 2048) and info["layer"] == "pool3" and len(info["sha256"]) == 64
    # random-init activations shrink with depth (~1e-7 here), so compare relative to their scale
    scale = np.abs(f[0]).max()
    assert scale > 0 and np.abs(f[3] - f[0]).max() < 1e-4 * scale < np.abs(f[1] - f[0]).max()


def test_xrv_extractor_from_a_local_state_dict(tmp_path):
    """A torchxrayvision DenseNet built here (random weights; the published ones are never
    downloaded) saved as safetensors: loaded into a fresh DenseNet, 1024-d pooled features at 224 px."""
    import torch
    import torchxrayvision as xrv
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = xrv.models.DenseNet(weights=None).eval()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "xrv.safetensors"))
    embed, info = X.make_extractor("xrv", xrv_weights=tmp_path / "xrv.safetensors")
    x = np.random.default_rng(3).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    f = embed(np.concatenate([x, x[:1]]))
    assert f.shape == (3, 1024) and info["input_size"] == 224 and len(info["sha256"]) == 64
    np.testing.assert_allclose(f[2], f[0], rtol=1e-4, atol=1e-5)
    with torch.inference_mode():  # the same weights as the saved network: identical features
        ref = net.features2(torch.nn.functional.interpolate(
            torch.from_numpy(x[:1]).float().div(255).mul(2).sub(1).mul(1024)[:, None], size=(224, 224),
            mode="bilinear", align_corners=False))
    np.testing.assert_allclose(f[0], ref[0].numpy(), rtol=1e-3, atol=1e-4)


def _blobs(folder, n, rng, bright, size=40):
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        img = np.clip(rng.normal(bright, 30, (size, size + 8)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:03d}.png")
        names.append(f"{i:03d}.png")
    return names


def test_cli_eval_on_tiny_folders(tmp_path):
    from cxraug.classify.model import Classifier

    rng = np.random.default_rng(4)
    Classifier(arch="resnet10t", label_names=["Pneumonia"], image_size=32).save_pretrained(tmp_path / "clf")
    # real: a labelled manifest, 12 pneumonia-positive images and 12 negative ones
    names = _blobs(tmp_path / "real", 24, rng, 100)
    pd.DataFrame({"path": names, "Pneumonia": ["1"] * 12 + ["0"] * 12}).to_csv(
        tmp_path / "real" / "manifest.csv", index=False)
    # synthetic: a cohort manifest with one rejected row that must be ignored
    files = [f"images/{n}" for n in _blobs(tmp_path / "cohort" / "images", 22, rng, 140)]
    rows = [{"file": f, "accepted": i != 21, "target": "pneumonia" if i < 11 else "negative",
             **{o: "" for o in L.OBSERVATIONS}} for i, f in enumerate(files)]
    pd.DataFrame(rows).to_csv(tmp_path / "cohort" / "manifest.csv", index=False)

    out = tmp_path / "eval.json"
    code = main(["eval", "--real", str(tmp_path / "real"), "--synth", str(tmp_path / "cohort"),
                 "--out", str(out), "--classifier", str(tmp_path / "clf"), "--image-size", "32",
                 "--min-count", "10"])
    assert code == 0
    card = json.loads(out.read_text())
    assert card["counts"] == {"real": 24, "synthetic": 21}
    assert card["extractor"]["name"] == "classifier" and len(card["extractor"]["sha256"]) == 64
    assert card["resize"] == "aspect-preserving pad to 32 px" and card["seed"] == 0
    assert card["metrics"]["fid"] > 0 and 0 <= card["metrics"]["precision"] <= 1
    assert set(card["per_label"]) == {"Pneumonia", "negative"}
    assert card["per_label"]["Pneumonia"] == {**card["per_label"]["Pneumonia"], "real": 12, "synthetic": 11}
    assert set(card["diversity"]["per_group"]) == {"Pneumonia", "negative"}
    # the real-vs-real floor: the same metrics on two disjoint halves of the 24 real images
    assert card["floor"]["source"] == "split" and card["floor"]["counts"] == {"reference": 12, "compared": 12}
    assert set(card["metrics"]) | {"two_sample_auc"} <= set(card["floor"])
    assert 0 <= card["floor"]["two_sample_auc"] <= 1 and 0 <= card["two_sample_auc"] <= 1

    # a plain image folder works on both sides; a too-high --min-count skips per-label metrics
    code = main(["eval", "--real", str(tmp_path / "real"), "--synth", str(tmp_path / "cohort" / "images"),
                 "--out", str(out), "--classifier", str(tmp_path / "clf"), "--image-size", "32",
                 "--max-images", "15"])
    card = json.loads(out.read_text())
    assert code == 0 and card["counts"] == {"real": 15, "synthetic": 15}
    assert card["floor"]["counts"] == {"reference": 8, "compared": 7}
    assert card["synthetic_matched"]["counts"] == {"real": 8, "synthetic": 7}


def test_cli_eval_bad_input_exits_2(tmp_path, capsys):
    (tmp_path / "synth").mkdir()
    _blobs(tmp_path / "real", 5, np.random.default_rng(5), 100)
    _blobs(tmp_path / "synth", 5, np.random.default_rng(6), 100)
    args = ["eval", "--real", str(tmp_path / "real"), "--synth", str(tmp_path / "synth"),
            "--out", str(tmp_path / "e.json")]
    assert main([*args, "--extractor", "inception", "--inception-weights", str(tmp_path / "no.pth")]) == 2
    assert "never downloads" in capsys.readouterr().err
    assert main([*args, "--classifier", str(tmp_path / "nothing")]) == 2
    assert main([*args[:3], "--synth", str(tmp_path / "nope"), "--classifier", str(tmp_path)]) == 2
