"""The perceptual term of VAE training and decoder tuning (cxraug.models.perceptual): its distance,
its place in the training loops (2 steps, exact resume, the saved record), one-line refusals of a
bad ``vae.perceptual_net``, and a run whose VAE has 8 latent channels, end to end."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config, write_png

from cxraug.classify.model import Classifier
from cxraug.cli.main import main
from cxraug.core.config import ConfigError
from cxraug.core.progress import read_metrics
from cxraug.diffusion.pipeline import DiffCXRPipeline
from cxraug.diffusion.stages import train_run
from cxraug.models.autoencoder import META_NAME, LatentSpace
from cxraug.models.config import VAEConfig
from cxraug.models.perceptual import PerceptualLoss
from cxraug.models.uvit import UViT
from cxraug.models.vae_train import build_vae, train_vae

TINY = {"image_size": 32, "block_out_channels": [8, 16], "steps": 2, "batch_size": 4, "lr": 1e-3,
        "scale_samples": 8}


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    """A small real classifier folder as ``cxraug train classifier`` writes it (random weights:
    these tests check the mechanics, not what a trained network's features are worth)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("clf") / "model"
    Classifier("resnet10t", ["Pneumonia"], 32).save_pretrained(folder)
    return folder


def _blur(x, k):
    return F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="reflect"), k, 1)


def test_distance_is_zero_for_identical_images_and_grows_with_blur(clf):
    loss = PerceptualLoss.from_classifier(clf)
    assert loss.info["arch"] == "resnet10t" and loss.info["weights"].startswith("sha256:")
    assert loss.info["layers"] == ["act1", "layer1", "layer2", "layer3"]  # down to stride 16
    assert not loss.training and not any(p.requires_grad for p in loss.parameters())
    x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-7)
    d = [loss(_blur(x, k), x).item() for k in (3, 5, 9)]
    assert 0 < d[0] < d[1] < d[2] <= 4  # 2 (1 - cos) per layer, in [0, 4]
    loss.train()  # a training loop's .train() leaves the classifier's BatchNorm in eval mode
    assert not loss.training and not loss.net.training
    # gradients reach the input, not the frozen network
    y = x.clone().requires_grad_(True)
    loss(_blur(y, 5), x).backward()
    assert y.grad.abs().sum() > 0
    # a cxraug train classifier run folder (the classifier in model/) is accepted too
    assert PerceptualLoss.from_classifier(clf.parent).info["weights"] == loss.info["weights"]


def test_two_steps_with_the_term_train_log_and_record_it(clf, images, tmp_path):
    plain = train_vae(images, VAEConfig(**TINY), progress=False)
    cfg = VAEConfig(**TINY, perceptual_weight=0.5, perceptual_net=str(clf))
    space = train_vae(images, cfg, tmp_path / "vae", progress=False)
    # the term changes the gradients: other weights than L1 + KL alone give
    ref = plain.vae.state_dict()
    assert any(not torch.equal(v, ref[k]) for k, v in space.vae.state_dict().items())
    log = read_metrics(tmp_path / "vae" / "train_log.jsonl")
    assert [r["step"] for r in log] == [2] and log[0]["perceptual"] > 0
    train = json.loads((tmp_path / "vae" / META_NAME).read_text())["train"]
    assert train["perceptual_weight"] == 0.5 and train["final_perceptual"] == pytest.approx(log[0]["perceptual"])
    assert train["perceptual"]["arch"] == "resnet10t" and train["perceptual"]["net"] == "model"  # no absolute path
    assert train["perceptual"]["weights"] == PerceptualLoss.from_classifier(clf).info["weights"]
    # off (the default): the record is what it always was
    train_vae(images, VAEConfig(**TINY), tmp_path / "off", progress=False)
    off = json.loads((tmp_path / "off" / META_NAME).read_text())["train"]
    assert set(off) == {"steps", "final_recon_loss", "recon_loss", "kl_weight"}


@pytest.mark.parametrize("stop", [3])  # mid-epoch: 10 images of batch 4
def test_killed_training_with_the_term_resumes_exactly(clf, images, tmp_path, stop, one_thread):
    cfg = VAEConfig(**{**TINY, "steps": 7, "crop_size": 16}, perceptual_weight=1.0, perceptual_net=str(clf))
    full = train_vae(images, cfg, tmp_path / "a", progress=False, checkpoints=tmp_path / "ca",
                     checkpoint_every=stop)
    assert train_vae(images, cfg, tmp_path / "b", progress=False, checkpoints=tmp_path / "cb",
                     checkpoint_every=stop, max_steps=stop) is None
    torch.manual_seed(1234)  # a fresh process's global RNG is not the killed one's
    resumed = train_vae(images, cfg, tmp_path / "b", progress=False, checkpoints=tmp_path / "cb",
                        checkpoint_every=stop)
    ref = full.vae.state_dict()
    for k, v in resumed.vae.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert read_metrics(tmp_path / "b" / "train_log.jsonl") == read_metrics(tmp_path / "a" / "train_log.jsonl")
    assert json.loads((tmp_path / "b" / META_NAME).read_text())["train"] == \
        json.loads((tmp_path / "a" / META_NAME).read_text())["train"]


def test_bf16_autocast_trains_and_is_recorded(images, tmp_path):
    space = train_vae(images, VAEConfig(**TINY, precision="bf16"), tmp_path / "vae", progress=False)
    assert next(space.vae.parameters()).dtype == torch.float32  # weights stay fp32
    train = json.loads((tmp_path / "vae" / META_NAME).read_text())["train"]
    assert train["precision"] == "bf16" and np.isfinite(train["final_recon_loss"])
    with pytest.raises(ConfigError, match="vae.precision"):
        VAEConfig(precision="fp16").validate()


def test_bad_perceptual_net_is_one_line(clf, images, tmp_path, capsys):
    vae_folder = build_vae(VAEConfig(**TINY)).save(tmp_path / "a_vae")
    for net, why in ((tmp_path / "missing", "no such folder"), (tmp_path, "no config.json"),
                     (vae_folder, "not a Classifier")):
        with pytest.raises(ConfigError, match=why) as e:
            train_vae(images, VAEConfig(**TINY, perceptual_weight=1.0, perceptual_net=str(net)), progress=False)
        assert str(e.value).startswith("vae.perceptual_net") and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="vae.perceptual_net: empty"):
        VAEConfig(perceptual_weight=1.0).validate()
    with pytest.raises(ConfigError, match="vae.perceptual_weight"):
        VAEConfig(perceptual_weight=-1.0).validate()
    # through the CLI: refused before any stage trains, in one line naming the key
    data = tmp_path / "data"
    rows = ["image_path,split,patient_id,pneumonia,subtype"]
    for i in range(8):
        write_png(data / f"images/{i}.png", seed=i)
        rows.append(f"images/{i}.png,{'test' if i >= 6 else 'train'},P{i},{i % 2},normal")
    (data / "index.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    sets = ["--set", "vae.perceptual_weight=1", "--set", f"vae.perceptual_net={tmp_path / 'nope'}"]
    capsys.readouterr()
    assert main(["train", "vae", "--data", str(data), "--out", str(out), *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "vae.perceptual_net" in err and "Traceback" not in err
    assert not (out / "vae").exists()


def test_eight_latent_channels_and_the_term_end_to_end(clf, kermany_fixture, tmp_path):
    """vae.latent_channels=8, the perceptual term in VAE training and decoder tuning: every stage
    trains, the denoiser takes its channel count from the VAE, and the pipeline samples."""
    cfg = tiny_config(kermany_fixture, "vae.latent_channels=8", "vae.perceptual_weight=0.5",
                      f"vae.perceptual_net={clf}", "decoder.steps=2", "decoder.batch_size=4",
                      "decoder.disc_start=1", "decoder.disc_channels=8", "decoder.disc_layers=2",
                      "decoder.perceptual_weight=0.5", f"decoder.perceptual_net={clf}",
                      "decoder.log_every=1")
    run = train_run(cfg, tmp_path / "run", ["vae", "decoder", "text", "1", "2"], progress=False)
    space = LatentSpace.load(run.vae)
    assert space.latent_shape == (8, 8, 8) and len(space.latents_mean) == 8
    meta = json.loads((run.vae / META_NAME).read_text())
    assert meta["train"]["perceptual_weight"] == 0.5 and meta["decoder_tune"]["perceptual_weight"] == 0.5
    assert all("perceptual" in r for r in read_metrics(run.root / "metrics_decoder.jsonl"))
    denoiser = UViT.from_pretrained(run.denoiser)
    assert denoiser.args["in_channels"] == 8
    img = DiffCXRPipeline.from_pretrained(run.root)(["No acute findings."], seeds=[1])
    assert img.shape == (1, 32, 32)


def test_a_decoder_tuned_before_the_term_existed_still_continues(kermany_fixture, tmp_path):
    """A run tuned before ``decoder.perceptual_*`` existed has no such keys in its record: they
    count as their defaults (off), so more steps are not refused; turning the term on is."""
    from dataclasses import asdict

    from cxraug.core.errors import CxraugError
    from cxraug.core.runs import RunDir
    from cxraug.diffusion.config import DecoderTuneConfig
    from cxraug.diffusion.stages import check_decoder

    run = RunDir(tmp_path / "run")
    old = {k: v for k, v in asdict(DecoderTuneConfig(steps=4)).items() if not k.startswith("perceptual")}
    run.vae.mkdir(parents=True)
    (run.vae / META_NAME).write_text(json.dumps({"decoder_tune": old}))
    assert check_decoder(tiny_config(kermany_fixture, "decoder.steps=4"), run) == 4
    with pytest.raises(CxraugError, match="decoder.perceptual_weight=0.0, not 0.5"):
        check_decoder(tiny_config(kermany_fixture, "decoder.steps=4", "decoder.perceptual_weight=0.5",
                                  "decoder.perceptual_net=x"), run)
