"""Shared fixtures: real-data root, tiny generated datasets, a temporary cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxraug.data import labels as L
from cxraug.diffusion.config import TINY

# Keep tests reproducible and polite on a 2-core machine.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("CXRAUG_DATA_ROOT", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def _templates_file(tmp_path_factory) -> Path:
    """The IU-mined template bank, built once per test session (about 10 s of CPU)."""
    from cxraug.data.templates import SHIPPED_TEMPLATES, build_iu_templates

    path = tmp_path_factory.mktemp("templates") / SHIPPED_TEMPLATES
    build_iu_templates(path)
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch, request):
    """Every test gets its own image cache so runs never share state; the deterministic
    template bank is built once and linked in."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("CXRAUG_CACHE", str(cache))
    if "no_templates" not in request.keywords:
        (cache / "templates").mkdir()
        (cache / "templates" / request.getfixturevalue("_templates_file").name).symlink_to(
            request.getfixturevalue("_templates_file"))


@pytest.fixture
def data_root() -> Path:
    """The real data folder (``$CXRAUG_DATA_ROOT``, default ``../shared/data``); skips if absent."""
    if not (DATA_ROOT / "kermany" / "index.csv").is_file():
        pytest.skip(f"real data not found at {DATA_ROOT}; set CXRAUG_DATA_ROOT")
    return DATA_ROOT


def write_png(path: Path, size: int = 32, seed: int = 0, value: int | None = None) -> Path:
    """A small synthetic grayscale PNG (a bright 'mediastinum' band on noise)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (size, size), dtype=np.uint8)
    img[:, size // 3: size // 2] = 200
    if value is not None:
        img[:] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


@pytest.fixture
def images():
    """``uint8 [10, 32, 32]``: a smooth structured pattern plus noise (images an autoencoder
    can learn and a blur visibly changes)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    base = (127 + 100 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.float32)
    return np.clip(base + rng.normal(0, 20, (10, 32, 32)), 0, 255).astype(np.uint8)


@pytest.fixture
def kermany_fixture(tmp_path) -> Path:
    """A Kermany-layout folder: index.csv + 24 PNGs, 12 patients, official train/test."""
    root = tmp_path / "kermany"
    rows = ["image_path,split,patient_id,pneumonia,subtype"]
    for i in range(24):
        split = "test" if i >= 18 else "train"
        pneu = i % 2
        sub = "normal" if not pneu else ("bacteria" if i % 4 == 1 else "virus")
        name = f"images_128/{split}_{i:03d}.png"
        write_png(root / name, seed=i)
        rows.append(f"{name},{split},P{i // 2:03d},{pneu},{sub}")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def nih_fixture(tmp_path) -> Path:
    """An NIH-subset-layout folder: index.csv with image_path_64 and 14 label columns."""
    root = tmp_path / "nih14"
    names = list(L.NIH_LABELS)
    header = "image_id,image_path_64,patient_id,follow_up,age,sex,view,finding_labels," + ",".join(names)
    rows = [header]
    findings_cycle = ["No Finding", "Pneumonia", "Effusion|Pneumonia", "Mass|Nodule", "Emphysema",
                      "Infiltration", "Atelectasis|Effusion", "No Finding"]
    for i in range(40):
        f = findings_cycle[i % len(findings_cycle)]
        fs = set(f.split("|"))
        name = f"images_64/{i:08d}_000.png"
        write_png(root / name, seed=100 + i)
        flags = ",".join("1" if n in fs else "0" for n in names)
        rows.append(f"{i:08d}_000.png,{name},{i // 2},0,50,M,{'AP' if i % 3 else 'PA'},{f},{flags}")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    return root


# ---------------------------------------------------------------------- a tiny Diff-CXR run



def tiny_config(data, *extra):
    """A Diff-CXR config that trains every stage in seconds on 32 px images."""
    from cxraug.core import config as C
    from cxraug.diffusion.config import DiffCXRConfig

    return C.load(DiffCXRConfig, None, [f"data.data={data}", *TINY, *extra])


def train_tiny_run(tmp_path_factory):
    """Stages vae, text, 1 and 2 on a 24-image Kermany-layout fixture: ``(cfg, run, data_root)``."""
    from cxraug.diffusion.stages import train_run

    root = tmp_path_factory.mktemp("kermany")
    rows = ["image_path,split,patient_id,pneumonia,subtype"]
    for i in range(24):
        name = f"images/{i:03d}.png"
        write_png(root / name, seed=i)
        rows.append(f"{name},{'test' if i >= 20 else 'train'},P{i // 2},{i % 2},{'virus' if i % 2 else 'normal'}")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    cfg = tiny_config(root)
    run = train_run(cfg, tmp_path_factory.mktemp("run") / "r", ["vae", "text", "1", "2"], progress=False)
    return cfg, run, root


def generator_run(data, folder, *extra):
    """A generator run folder as cxraug train starts it: its recipe and its splits.csv. The
    bench's gen-data->real arm reads only these (which real images the generator is trained on)."""
    from cxraug.core import config as C
    from cxraug.data.adapters import load_dataset
    from cxraug.data.splits import splits_for

    gen_cfg = tiny_config(data, *extra)
    C.save(gen_cfg, folder)
    splits_for(load_dataset(data), folder / "splits.csv", seed=gen_cfg.data.split_seed)
    return folder


def write_cohort(folder, n=8):
    """A cohort folder in the layout cxraug synth writes (manifest.csv + images), Pneumonia only."""
    rows = ["file,Pneumonia,accepted"]
    for i in range(n):
        write_png(folder / f"s{i}.png", seed=200 + i)
        rows.append(f"s{i}.png,{i % 2},true")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder


# ---------------------------------------------------------------------- benchmark scripts


def load_script(name: str):
    """A script under benchmarks/ imported as a module (they are scripts, not a package)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    """One intra-op thread: on a busy 2-core machine two threads wait on each other at every
    parallel region (a tiny bench took 70 s with two threads, 10 s with one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
