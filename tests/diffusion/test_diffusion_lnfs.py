"""LNFS: each stage on tiny synthetic latents with planted outliers, outputs, config, CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxraug.cli.main import main
from cxraug.core import config as C
from cxraug.core.config import ConfigError
from cxraug.core.errors import DataError
from cxraug.data.adapters import load_dataset
from cxraug.diffusion import lnfs
from cxraug.diffusion.lnfs_config import FilterConfig, LNFSConfig
from cxraug.diffusion.lnfs_manifold import manifold_stage
from cxraug.diffusion.lnfs_result import STAGES
from cxraug.diffusion.lnfs_scores import discriminator_stage, kmeans_stage
from cxraug.diffusion.prepare import apply_filter

FAST = {"manifold_steps": 100, "kmeans_n_init": 2}
CLI_FAST = ["--set", "lnfs.manifold=pca", "--set", "lnfs.kmeans_n_init=1"]


def blobs(n: int, dim: int, rng: np.random.Generator, spread: float = 6.0) -> np.ndarray:
    """Three Gaussian clusters in ``dim`` dimensions (the 'typical' data)."""
    centers = rng.normal(size=(3, dim)) * spread
    return centers[rng.integers(0, 3, n)] + rng.normal(size=(n, dim))


def manifold_data(n: int, rng: np.random.Generator, d: int = 64, r: int = 4):
    """Points near an r-dimensional subspace of R^d (plus small isotropic noise)."""
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    on, off = basis[:, :r], basis[:, r:]
    coords = rng.normal(size=(n, r)) * 3
    return coords @ on.T + 0.1 * rng.normal(size=(n, d)), on, off


def planted_latents(n_clean: int = 240, seed: int = 0):
    """Latents ``[N, 4, 4, 4]``: clean data on a low-dimensional structure, one coherent group
    of 8 corrupted images (shared off-manifold shift) and 4 isolated far-away images."""
    rng = np.random.default_rng(seed)
    x, _, off = manifold_data(n_clean, rng)
    u = off[:, 0] * 25.0
    group = x[:8] + u + 0.3 * rng.normal(size=(8, x.shape[1]))
    far = rng.normal(size=(4, x.shape[1])) * 6.0
    lat = np.concatenate([x, group, far]).reshape(-1, 4, 4, 4)
    bad = np.r_[np.zeros(n_clean, bool), np.ones(12, bool)]
    order = rng.permutation(len(lat))
    return lat[order].astype(np.float32), bad[order]


# ---------------------------------------------------------------------------------- stages

def test_kmeans_flags_far_points_and_tiny_clusters():
    rng = np.random.default_rng(1)
    clean = blobs(300, 8, rng)
    far = rng.normal(size=(5, 8)) * 40
    tight = rng.normal(size=(4, 8)) * 0.1 + 60  # a small coherent group far away
    feats = np.concatenate([clean, far, tight])
    km = kmeans_stage(feats, LNFSConfig(k=4))
    assert km.flagged[300:].all()
    assert km.tiny[305:].all() and not km.tiny[:300].any()
    assert km.flagged[:300].mean() < 0.05
    assert (km.global_z[300:] > km.global_z[:300].max()).all()


@pytest.mark.parametrize("kind", ["autoencoder", "pca"])
def test_manifold_flags_off_manifold_points(kind):
    rng = np.random.default_rng(2)
    x, _, off = manifold_data(300, rng)
    away = x[:6] + (rng.normal(size=(6, off.shape[1])) @ off.T) * 0.6  # off the subspace
    blank = np.zeros((2, x.shape[1]))  # exactly on it: far too easy to reconstruct
    data = np.concatenate([x, away, blank])
    typical = np.r_[np.ones(300, bool), np.zeros(8, bool)]
    cfg = LNFSConfig(manifold=kind, manifold_dim=4, manifold_steps=200, manifold_folds=2)
    mf = manifold_stage(data, typical, cfg)
    assert (mf.z[300:306] > cfg.recon_z).all()
    assert (mf.z[306:] < -cfg.recon_z).all() and mf.flagged[306:].all()
    assert mf.flagged[:300].mean() < 0.05
    if kind == "pca":
        one_sided = dataclasses.replace(cfg, recon_two_sided=False)
        one_sided = manifold_stage(data, typical, one_sided)
        assert not one_sided.flagged[306:].any() and one_sided.flagged[300:306].all()


def test_discriminator_catches_missed_and_rescues_mislabelled():
    rng = np.random.default_rng(3)
    clean = rng.normal(size=(200, 6))
    noisy = rng.normal(size=(30, 6))
    noisy[:, :2] += 4.0
    feats = np.concatenate([clean, noisy])
    truth = np.r_[np.zeros(200, bool), np.ones(30, bool)]
    pseudo = truth.copy()
    pseudo[200:204] = False  # noisy images the rules missed
    pseudo[:3] = True  # clean images the rules flagged by mistake
    dc = discriminator_stage(feats, pseudo, LNFSConfig(), rule_score=pseudo.astype(float))
    assert dc.trained and dc.folds == 5
    assert ((dc.score >= 0) & (dc.score <= 1)).all()
    assert (dc.score[200:204] > 0.5).all()
    assert (dc.score[:3] < 0.5).all()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(truth, dc.score) > 0.97


def test_discriminator_needs_enough_pseudo_noisy():
    feats = np.random.default_rng(4).normal(size=(50, 3))
    pseudo = np.zeros(50, bool)
    pseudo[:2] = True
    rule = np.linspace(0, 1, 50)
    dc = discriminator_stage(feats, pseudo, LNFSConfig(), rule)
    assert not dc.trained and np.array_equal(dc.score, rule) and "skipped" in dc.note


# ---------------------------------------------------------------------------------- pipeline

def test_run_lnfs_drops_planted_and_is_deterministic():
    lat, bad = planted_latents()
    cfg = LNFSConfig(**FAST)
    a = lnfs.run_lnfs(lat, cfg)
    b = lnfs.run_lnfs(lat, cfg)
    pd.testing.assert_frame_equal(a.table, b.table)
    dropped = ~a.keep
    assert dropped[bad].all(), a.table[bad]
    assert dropped[~bad].mean() < 0.05
    t = a.table
    assert set(t["stage"]) <= set(STAGES)
    assert (t.loc[t["keep"], "stage"] == "kept").all()
    assert (t.loc[~t["keep"], "stage"] != "kept").all()
    assert t["reason"].str.len().gt(0).all()
    assert a.info["discriminator_trained"] and a.info["dropped"] == int(dropped.sum())
    other_seed = lnfs.run_lnfs(lat, LNFSConfig(seed=1, **FAST))
    assert not other_seed.table["noise_score"].equals(a.table["noise_score"])


def test_max_drop_frac_caps_drops():
    lat, _ = planted_latents()
    res = lnfs.run_lnfs(lat, LNFSConfig(max_drop_frac=0.02, manifold="pca", kmeans_n_init=1))
    assert (~res.keep).sum() == int(0.02 * len(lat))
    capped = res.table["reason"].str.contains("cap")
    assert capped.any() and res.info["capped"] == int(capped.sum())


def test_too_few_images_is_a_user_error():
    with pytest.raises(DataError, match="at least 10"):
        lnfs.run_lnfs(np.zeros((5, 4, 2, 2)), LNFSConfig())


def test_outputs_readable_by_apply_filter(kermany_fixture, tmp_path):
    ds = load_dataset(kermany_fixture)
    rng = np.random.default_rng(5)
    lat = rng.normal(size=(len(ds), 4, 2, 2))
    lat[:2] += 60  # two far-away images
    res = lnfs.run_lnfs(lat, LNFSConfig(**FAST), ids=ds.ids, paths=[str(p) for p in ds.paths])
    images = (rng.random((len(ds), 16, 16)) * 255).astype(np.uint8)
    files = res.save(tmp_path / "out", labels=ds.labels, images=images)
    assert not res.keep[:2].any()

    df = pd.read_csv(files["csv"])
    assert list(df.columns) == ["id", "keep", "noise_score", "stage", "reason"]
    kept = apply_filter(ds, files["csv"])
    assert len(kept) == int(res.keep.sum()) and ds.ids[0] not in kept.ids
    assert "LNFS filter keep.csv" in kept.filters[-1]

    summary = json.loads(files["summary"].read_text())
    assert summary["overall"]["dropped"] == int((~res.keep).sum())
    assert {"Pneumonia", "No Finding"} <= set(summary["per_label"])
    per = summary["per_label"]
    assert per["Pneumonia"]["images"] + per["No Finding"]["images"] == len(ds)
    assert summary["config"]["k"] == 8 and summary["top_dropped"][0]["id"] in ds.ids[:2]

    with Image.open(files["sheet"]) as im:
        assert im.size[0] == 2 * 64 and im.size[1] == 64 + 12  # two dropped tiles + caption
    empty = lnfs.run_lnfs(rng.normal(size=(20, 4)), LNFSConfig(**FAST))
    if empty.keep.all():
        assert empty.write_contact_sheet(images, tmp_path / "none.png").is_file()


@pytest.mark.parametrize("override, match", [
    ("lnfs.k=0", "lnfs.k"),
    ("lnfs.score_threshold=1.5", "lnfs.score_threshold"),
    ("lnfs.max_drop_frac=-0.1", "lnfs.max_drop_frac"),
    ("lnfs.manifold=umap", "lnfs.manifold"),
    ("lnfs.disc_folds=1", "lnfs.disc_folds"),
    ("lnfs.kmeans_z=abc", "lnfs.kmeans_z"),
    ("lnfs.nope=1", "nope"),
])
def test_bad_config_values(override, match):
    with pytest.raises(ConfigError, match=match):
        C.load(FilterConfig, None, [override])


def test_config_overrides_apply():
    cfg = C.load(FilterConfig, None, ["lnfs.k=4", "lnfs.manifold=pca", "lnfs.recon_z=3"]).lnfs
    assert (cfg.k, cfg.manifold, cfg.recon_z) == (4, "pca", 3.0)


# ---------------------------------------------------------------------------------- CLI

@pytest.fixture
def tiny_run(tmp_path):
    from cxraug.models.config import VAEConfig
    from cxraug.models.vae_train import build_vae

    run = tmp_path / "run"
    build_vae(VAEConfig(image_size=32, block_out_channels=[8, 16, 16])).save(run / "vae")
    return run


def test_cli_filter_on_tiny_run(kermany_fixture, tiny_run, tmp_path, capsys):
    out = tmp_path / "lnfs"
    args = ["filter", "--data", str(kermany_fixture), "--model", str(tiny_run), "--out", str(out),
            "--set", "lnfs.manifold_steps=20", *CLI_FAST]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "LNFS removals" in printed and "all 24 images" in printed
    for name in ("keep.csv", "summary.json", "dropped.png", "lnfs.yaml"):
        assert (out / name).is_file(), name
    assert list((out / "cache").glob("moments-*.npy"))
    df = pd.read_csv(out / "keep.csv")
    assert len(df) == 24 and list(df.columns[:2]) == ["id", "keep"]
    assert C.load(FilterConfig, out / "lnfs.yaml").lnfs.manifold_steps == 20

    # never overwrite silently; --overwrite replaces the outputs
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and err.count("\n") == 1
    assert main(args + ["--overwrite"]) == 0

    # with the run's splits.csv only the train split is filtered
    from cxraug.data.splits import splits_for

    ds = splits_for(load_dataset(kermany_fixture), tiny_run / "splits.csv")
    n_train = int((ds.table["assigned_split"] == "train").sum())
    assert main(["filter", "--data", str(kermany_fixture), "--vae", str(tiny_run / "vae"),
                 "--model", str(tiny_run), "--out", str(tmp_path / "lnfs2"),
                 *CLI_FAST]) == 0
    assert len(pd.read_csv(tmp_path / "lnfs2" / "keep.csv")) == n_train < 24


def test_cli_filter_dry_run_and_errors(kermany_fixture, tiny_run, tmp_path, capsys):
    base = ["filter", "--data", str(kermany_fixture), "--out", str(tmp_path / "o")]
    assert main(base + ["--model", str(tiny_run), "--dry-run", "--set", "lnfs.k=3"]) == 0
    out = capsys.readouterr().out
    assert "k: 3" in out and "all 24 images" in out and not (tmp_path / "o").exists()

    assert main(base + ["--model", str(tmp_path / "missing")]) == 2
    assert "latent-space folder not found" in capsys.readouterr().err
    assert main(base) == 2
    assert "--model RUN" in capsys.readouterr().err
    assert main(base + ["--model", str(tiny_run), "--set", "lnfs.k=0"]) == 2
    assert "lnfs.k" in capsys.readouterr().err
    assert main(base + ["--model", str(tiny_run), "--image-size", "30"]) == 2
    assert "divisible" in capsys.readouterr().err
