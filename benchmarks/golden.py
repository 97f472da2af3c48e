"""Byte-for-byte behaviour check for refactors: a tiny train -> synth -> bench through the CLI,
with a digest of every artifact it writes.

    python benchmarks/golden.py --work DIR --out digest.json           # on the new code
    PYTHONPATH=OLD_CHECKOUT python benchmarks/golden.py --work DIR2 --out old.json
    python benchmarks/golden.py --compare old.json digest.json

Everything runs in one thread (``OMP_NUM_THREADS=1``) on a generated 48-image Kermany-layout
folder, so two runs of the same code on the same machine give the same bytes. The digest holds
sha256 of every weight file, image, manifest and card, with wall-clock fields (timings, dates,
speeds) removed from JSON/CSV first. ``--compare`` lists the files that differ and exits 1 if any
does. Takes about 2 minutes on one core.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# Same tiny settings as tests/conftest.py's TINY: every stage trains in seconds on 32 px images.
TINY = [
    "data.image_size=32", "data.prompts=paper", "vae.image_size=32", "vae.block_out_channels=[8, 16, 16]",
    "vae.steps=3", "vae.batch_size=4", "vae.scale_samples=8",
    "text.max_tokens=16", "text.cond_tokens=4", "text.epochs=1", "text.batch_size=4",
    "text.image_model=resnet10t", "text.image_size=32", "text.max_steps=2",
    "denoiser.preset=tiny", "train.steps=4", "train.batch_size=4", "train.log_every=1",
    "train.checkpoint_every=2", "train.sample_every=0", "train.warmup_steps=2",
    "adapter.steps=2", "adapter.batch_size=4", "adapter.log_every=1", "adapter.checkpoint_every=2",
    "adapter.sample_every=0", "sample.steps=3", "sample.grid_per_prompt=1",
]
# Keys whose values are wall-clock or machine facts, not results.
VOLATILE = ("time", "elapsed", "seconds", "_s", "speed", "it_s", "per_s", "date", "created", "host",
            "python", "torch", "version", "path", "cpu", "device", "duration")
SUFFIXES = (".safetensors", ".png", ".csv", ".json", ".jsonl", ".npz", ".npy", ".md", ".txt", ".yaml")


def fixture(root: Path) -> Path:
    """48 deterministic PNGs in the Kermany layout (train 0-31, test 32-47), 24 patients."""
    rows = ["image_path,split,patient_id,pneumonia,subtype"]
    for i in range(48):
        rng = np.random.default_rng(i)
        img = rng.integers(0, 60, (32, 32), dtype=np.uint8)
        img[:, 10:16] = 200
        img[4 + i % 8: 12 + i % 8, 20:28] += np.uint8(80 * (i % 2))
        name = f"images/{i:03d}.png"
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / name)
        rows.append(f"{name},{'test' if i >= 32 else 'train'},P{i // 2},{i % 2},"
                    f"{'virus' if i % 2 else 'normal'}")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    return root


def cli(*args: str) -> None:
    cmd = [sys.executable, "-c", "import sys; from cxraug.cli.main import main; sys.exit(main(sys.argv[1:]))",
           *args]
    print("+ cxraug", " ".join(args), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})


def _volatile(key: str) -> bool:
    k = key.lower()
    return any(v in k for v in VOLATILE)


def _scrub(obj):
    if isinstance(obj, dict):
        return {k: _scrub(v) for k, v in obj.items() if not _volatile(k)}
    if isinstance(obj, list):
        return [_scrub(v) for v in obj]
    return obj


def digest_file(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix in (".json",):
        data = json.dumps(_scrub(json.loads(data)), sort_keys=True).encode()
    elif path.suffix == ".jsonl":
        rows = [_scrub(json.loads(line)) for line in data.decode().splitlines() if line.strip()]
        data = json.dumps(rows, sort_keys=True).encode()
    elif path.suffix == ".csv":
        import pandas as pd

        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        df = df[[c for c in df.columns if not _volatile(c)]]
        data = df.to_csv(index=False).encode()
    elif path.suffix in (".md", ".txt", ".yaml"):
        data = "\n".join(line for line in data.decode(errors="replace").splitlines()
                         if not any(v in line.lower() for v in ("elapsed", "it/s", "date", "/tmp/",
                                                                 "seconds", "created"))).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): digest_file(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in SUFFIXES and "cache" not in p.relative_to(root).parts
            and not p.name.startswith(("config.yaml",))}


def run(work: Path) -> dict[str, str]:
    work.mkdir(parents=True, exist_ok=True)
    data = fixture(work / "data")
    sets = [a for kv in TINY for a in ("--set", kv)]
    cli("train", "--stage", "2", "--data", str(data), "--out", str(work / "run"), *sets)
    cli("synth", "--model", str(work / "run"), "--labels", "pneumonia", "--n", "6", "--steps", "3",
        "--gates", "memorisation", "--out", str(work / "cohort"))
    cli("bench", "--data", str(data), "--synth", str(work / "cohort"), "--arms", "real,real+dup,real+synth",
        "--real-frac", "0.5,1.0", "--labels", "pneumonia", "--arch", "resnet10t", "--image-size", "32", "--set",
        "classifier.max_epochs=1", "--set", "n_boot=20", "--set", "min_positive=2", "--out", str(work / "bench"))
    out = {}
    for part in ("run", "cohort", "bench"):
        out.update({f"{part}/{k}": v for k, v in digest_tree(work / part).items()})
    return out


def compare(a: Path, b: Path) -> int:
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    diff = sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))
    for k in diff:
        print(f"differs: {k} ({da.get(k, 'missing')} vs {db.get(k, 'missing')})")
    print(f"{len(set(da) | set(db)) - len(diff)} files identical, {len(diff)} differ")
    return 1 if diff else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(".cache/golden"))
    ap.add_argument("--out", type=Path, default=Path(".cache/golden/digest.json"))
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"))
    args = ap.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    d = run(args.work)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(d, indent=1, sort_keys=True) + "\n")
    print(f"{len(d)} files digested -> {args.out}")


if __name__ == "__main__":
    main()
