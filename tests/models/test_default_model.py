"""The shipped default model ``kermany-128``: loads by name, refuses labels it never saw, gives the
mission's commands their default folders, carries a complete model card, and never saw a test
image (official Kermany test split, the embedded sample's test part)."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from cxraug.cli.main import main
from cxraug.data.reference import Reference
from cxraug.models.zoo import DEFAULT_MODEL, resolve_model

ROOT = resolve_model(DEFAULT_MODEL)
SAMPLE = Path(__file__).resolve().parents[2] / "cxraug" / "assets" / "sample" / "kermany"


def test_default_model_loads_by_name_at_128_px():
    from cxraug.diffusion.pipeline import DiffCXRPipeline

    pipe = DiffCXRPipeline.from_pretrained(DEFAULT_MODEL)
    assert pipe.space.image_size == 128 and pipe.has_adapter
    assert pipe.space.latent_shape == (8, 16, 16)
    img = pipe(["There is pneumonia."], seeds=[0], steps=2)
    assert img.shape == (1, 128, 128) and img.dtype == np.uint8 and img.std() > 1


def test_default_model_is_small_and_safetensors_only():
    files = [p for p in ROOT.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 50e6
    assert not [p for p in files if p.suffix in (".pt", ".pth", ".bin", ".ckpt", ".pkl")]


def test_unknown_label_is_one_line_naming_the_known_labels(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["synth", "--labels", "cardiomegaly", "--n", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cardiomegaly" in err and re.search(r"knows: .*pneumonia", err) and "no finding" in err
    assert not (tmp_path / "cohorts").exists()


def test_synth_defaults_to_the_shipped_model_and_a_printed_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["synth", "--labels", "pneumonia", "--n", "3", "--steps", "2"]) == 0
    assert "cohorts/pneumonia-3" in capsys.readouterr().out
    folder = tmp_path / "cohorts" / "pneumonia-3"
    m = pd.read_csv(folder / "manifest.csv")
    assert len(m) == 3 and (m["memorisation"] != "not run").all()
    card = json.loads((folder / "cohort.json").read_text())
    assert card["generator"]["run"] == f"cxraug:{DEFAULT_MODEL}"  # no path of this machine
    from PIL import Image

    assert Image.open(folder / m["file"][0]).size == (128, 128)


def test_generate_defaults_to_the_shipped_model(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--labels", "pneumonia", "--n", "2", "--steps", "2"]) == 0
    assert len(list((tmp_path / "generated" / "pneumonia-2").glob("*.png"))) == 2


def test_model_card_has_the_promised_sections_and_true_numbers():
    card = (ROOT / "README.md").read_text()
    for needed in ("Training data", "CC BY 4.0", "Kermany", "Intended use", "not for clinical use",
                   "Known failure modes", "Metrics", "128 px"):
        assert needed.lower() in card.lower(), needed
    steps = json.loads((ROOT / "denoiser" / "config.json").read_text())["meta"]["steps"]
    adapter = json.loads((ROOT / "adapter" / "config.json").read_text())["meta"]["steps"]
    assert f"{steps:,} " in card and f"{adapter:,} " in card
    tuned = json.loads((ROOT / "vae" / "cxraug_latent.json").read_text()).get("decoder_tune", {}).get("steps")
    assert tuned is None or f"decoder tuned {tuned:,} steps" in card


def _patient(image_id: str) -> str:
    m = re.search(r"(IM-\d+|person\d+)", image_id)
    assert m, image_id
    return m.group(1)


def test_trained_only_on_official_training_images_never_a_test_image():
    ref = Reference.load(ROOT / "reference.npz")
    ids = list(ref.train.ids) + list(ref.val.ids)
    assert len(ref.train.ids) > 4000
    assert all(i.startswith("train_") for i in ids)  # official training split only
    sample = pd.read_csv(SAMPLE / "index.csv", dtype=str)
    test = sample[sample.split == "test"]
    assert not {Path(p).name for p in test.image_path} & set(ids)
    # whole patients: no child of the sample's test part (official test patients) was trained on
    assert not set(test.patient_id) & {_patient(i) for i in ids}


def test_bench_warns_when_a_subset_is_too_small(tmp_path):
    from cxraug.core import config as C
    from cxraug.experiments import bench as B

    cfg = C.load(B.BenchConfig, None, ["real_fracs=[0.01, 1.0]", "labels=[pneumonia]"])
    real = B.load_real_splits(cfg, tmp_path / "splits.csv", cfg.image_size, cfg.split_seed)
    warnings = B.subset_warnings(cfg, real)
    assert len(warnings) == 1 and warnings[0].startswith("real fraction 0.01:")


def test_the_recipe_the_docs_name_is_the_shipped_models():
    """README and docs/training.md name the recipe that made the shipped model: it must describe it."""
    import yaml

    from cxraug.core import config as C
    from cxraug.diffusion.config import DiffCXRConfig

    repo = Path(__file__).resolve().parents[2]
    readme = " ".join((repo / "README.md").read_text().split())
    recipe = re.search(r"`--recipe (recipes/[\w.-]+\.yaml)` is the shipped model's recipe", readme).group(1)
    assert f"cxraug train --recipe {recipe} " in (repo / "docs" / "training.md").read_text()
    made = C.to_dict(C.load(DiffCXRConfig, repo / recipe))
    shipped = yaml.safe_load((ROOT / "config.yaml").read_text())
    for section in ("vae", "decoder", "denoiser"):
        assert made[section] == shipped[section], section
    for key in ("steps", "prediction_type", "zero_terminal_snr"):
        assert made["train"][key] == shipped["train"][key], key
    assert made["sample"] == shipped["sample"]
