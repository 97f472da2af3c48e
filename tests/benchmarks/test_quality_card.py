"""benchmarks/quality_card.py --stats-only: the image statistics of a cohort and of VAE
reconstructions against the official test images, and the markdown it writes (no generator
here: the two folders are written directly, with a known answer)."""

import argparse

import numpy as np
import pytest
from conftest import load_script
from PIL import Image
from scipy import ndimage


def _save(folder, images):
    folder.mkdir(parents=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:03d}.png")


@pytest.mark.no_templates
def test_stats_only_reads_copies_as_real_and_a_blurred_cohort_as_detail_poor(kermany_fixture, tmp_path):
    QC = load_script("quality_card")
    real = QC.official_test_images(str(kermany_fixture), 128)
    assert real.shape == (6, 128, 128)  # the fixture's 6 official test images, centre-cropped
    work = tmp_path / "work"
    _save(work / "vae-recon", real)  # a perfect autoencoder
    _save(work / "cohort", np.stack([ndimage.gaussian_filter(im, 2.0) for im in real]))  # a blurry generator
    res = {"model": "tiny", "command": "benchmarks/quality_card.py --stats-only", "date": "2026-12-06",
           "machine": {"model": "Some CPU", "cores": 2, "torch_threads": 1},
           "cohort": {"n": 6, "targets": {"all": 6}, "memorisation_fail": 0}}
    out = QC.stats_only(argparse.Namespace(data=str(kermany_fixture)), work, res)
    assert out.name == "quality_tiny_stats.json" and res["real"] == {"split": "test", "n": 6}
    recon, gen = (res["image_stats"][k]["synthetic"]["stats"] for k in ("vae_recon", "generator"))
    for name, s in recon.items():
        assert s["ratio"] == pytest.approx(1.0) and s["auc"] == pytest.approx(0.5), name
    # blur keeps the lowest band and removes 16-32 cycles (above that, uint8 rounding noise is left)
    assert gen["power_1-4"]["ratio"] > 0.9 and gen["power_16-32"]["ratio"] < 0.1
    assert gen["laplacian_var"]["ratio"] < 0.25 and gen["laplacian_var"]["auc"] == 1.0
    assert res["image_stats"]["generator"]["floor"]["counts"] == {"real": 3, "compared": 3}
    md = QC.markdown(res)
    assert "- command: `benchmarks/quality_card.py --stats-only`" in md and "- machine: Some CPU, 2 cores" in md
    assert "### VAE reconstructions of real test images: 6 images vs 6 real" in md
    assert "### generator cohort: 6 images vs 6 real" in md and "| power_48-64 |" in md


@pytest.mark.no_templates
def test_vae_reconstructions_follow_the_latent_space_they_are_asked_for(kermany_fixture, tmp_path):
    from cxraug.models.vae_train import VAEConfig, build_vae

    GS = load_script("guidance_sweep")
    vae = tmp_path / "vae"
    build_vae(VAEConfig(image_size=32, block_out_channels=[8, 16, 16])).save(vae)
    out = tmp_path / "recon"
    GS.vae_reconstructions("unused", str(kermany_fixture), 6, out, vae)
    first = sorted(out.glob("*.png"))
    assert len(first) == 6 and Image.open(first[0]).size == (32, 32)
    stamp = first[0].stat().st_mtime_ns
    GS.vae_reconstructions("unused", str(kermany_fixture), 6, out, vae)  # the same: reused
    assert first[0].stat().st_mtime_ns == stamp
    GS.vae_reconstructions("unused", str(kermany_fixture), 4, out, vae)  # another n: redone, not mixed
    assert len(list(out.glob("*.png"))) == 4
    other = tmp_path / "vae-other"  # another latent space in the same folder: redone
    build_vae(VAEConfig(image_size=32, block_out_channels=[8, 16, 16], latent_channels=8)).save(other)
    before = np.asarray(Image.open(out / "00000.png"))
    GS.vae_reconstructions("unused", str(kermany_fixture), 4, out, other)
    assert not np.array_equal(np.asarray(Image.open(out / "00000.png")), before)


def test_vae_only_markdown_has_no_cohort_and_names_the_reconstruction_floors():
    from cxraug.experiments.quality.image_stats import stats_section

    QC = load_script("quality_card")
    rng = np.random.default_rng(0)
    real, recon = (rng.integers(0, 256, (12, 128, 128), dtype=np.uint8) for _ in range(2))
    res = {"model": "v3-vae", "command": "benchmarks/quality_card.py --vae-only", "date": "2026-12-07",
           "machine": {"model": "Some CPU", "cores": 2, "torch_threads": 2},
           "vae_recon": {"counts": {"synthetic": 300}, "metrics": {"fid": 3.21}, "two_sample_auc": 0.71,
                         "floor": {"fid": 0.5, "two_sample_auc": 0.52, "equal_n": {"two_sample_auc": 0.55}},
                         "synthetic_matched": {"equal_n": {"two_sample_auc": 0.66}}},
           "image_stats": {"vae_recon": stats_section(real, recon, seed=0)}}
    line = QC.recon_line(res["vae_recon"])
    assert line == ("VAE reconstructions (300 test images): FID 3.2 (floor 0.5), two-sample AUC 0.710 "
                    "(floor 0.520; at equal n 0.660, floor 0.550)")
    md = QC.markdown(res)
    head, tables = md.split("## Image statistics")
    assert "cohort" not in head and line + "." in head
    assert "### VAE reconstructions of real test images: 12 images" in tables
    assert "generator cohort" not in tables and "| power_48-64 |" in tables


def test_a_packaged_model_keeps_the_judges_splits_under_work(kermany_fixture, tmp_path, monkeypatch):
    """--model kermany-128 (a shipped name: no splits.csv) must not write a stray kermany-128/
    folder into the working directory; a run's own splits.csv is used as it is."""
    from pathlib import Path

    D = load_script("dkim_fidelity")
    monkeypatch.chdir(tmp_path)
    path = D.splits_file(Path("kermany-128"), tmp_path / "work")
    assert path == tmp_path / "work" / "splits" / "kermany-128.csv"
    _, images, split = D.load_real(str(kermany_fixture), path, 32)
    assert path.is_file() and not (tmp_path / "kermany-128").exists()
    assert len(images) == len(split) and {"train", "test"} <= set(split)
    run = tmp_path / "run"
    run.mkdir()
    (run / "splits.csv").write_text(path.read_text())
    assert D.splits_file(run, tmp_path / "work") == run / "splits.csv"


def test_the_cohort_seed_draws_a_new_cohort(tmp_path_factory, tmp_path):
    """--cohort-seed: a confirmation card's cohort is cxraug synth's with another seed (a new draw
    of every image), recorded in the card."""
    import pandas as pd
    from conftest import train_tiny_run

    from cxraug.cohorts.plan import image_seed

    QC = load_script("quality_card")
    _, run, _ = train_tiny_run(tmp_path_factory)
    got = {s: QC.cohort(str(run.root), 4, tmp_path / f"c{s}", seed=s) for s in (0, 3)}
    assert got[3]["seed"] == 3 and got[3]["n"] == 4
    seeds = {s: pd.read_csv(tmp_path / f"c{s}" / "manifest.csv", dtype={"seed": str})["seed"].tolist() for s in got}
    assert seeds[3] == [str(image_seed(3, i)) for i in range(4)] and seeds[3] != seeds[0]
