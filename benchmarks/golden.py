"""Byte-for-byte behaviour check for refactors: a tiny train -> synth -> bench through the CLI,
with a digest of every artifact it writes.

    python benchmarks/golden.py --work DIR --out new.json
    cd /tmp && PYTHONPATH=OLD_CHECKOUT python NEW_CHECKOUT/benchmarks/golden.py --work DIR2 --out old.json
    python benchmarks/golden.py --compare old.json new.json

Run the old code from outside both checkouts (the CLI runs as ``python -c``, which puts the
current folder first on the path). The old checkout needs ``cxraug.diffusion.config.TINY`` (from
version 0.2.0 on; before it, the same list lived in tests/conftest.py). Everything runs in
one thread (``OMP_NUM_THREADS=1``) on a generated 48-image Kermany-layout folder, so two runs of
the same code on the same machine give the same bytes. The digest holds sha256 of every weight
file (tensors and sorted metadata), image, manifest and card, with wall-clock fields, paths and
folder hashes removed from JSON/CSV first. ``--compare`` lists the files that differ and exits 1
if any does. Takes under a minute on one core; two runs of the same code on the 2-core AMD EPYC
dev machine agree on all 70 files.
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

from cxraug.diffusion.config import TINY  # every stage trains in seconds on 32 px images

# Keys whose values are wall-clock or machine facts, not results.
VOLATILE = ("time", "elapsed", "seconds", "_s", "speed", "it_s", "per_s", "date", "created", "host",
            "python", "torch", "version", "path", "cpu", "device", "duration",
            # a hash of the generator folder's bytes; safetensors headers list metadata in an
            # order that changes between processes, so identical weights can hash differently
            "generator", "hash", "cohort_id")
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


def _safetensors_digest(path: Path) -> bytes:
    """Tensors and sorted metadata: the header's metadata order is not stable between processes."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(str(path), "np") as f:
        meta = json.dumps(f.metadata() or {}, sort_keys=True).encode()
    tensors = load_file(str(path))
    return meta + b"".join(k.encode() + str(v.dtype).encode() + v.tobytes() for k, v in sorted(tensors.items()))


def digest_file(path: Path, work: Path) -> str:
    data = path.read_bytes()
    if path.suffix in (".json", ".jsonl", ".csv", ".md", ".txt", ".yaml"):
        data = data.replace(str(work).encode(), b"WORK")
        path_text = data
    if path.suffix == ".safetensors":
        data = _safetensors_digest(path)
    elif path.suffix in (".json",):
        data = json.dumps(_scrub(json.loads(path_text)), sort_keys=True).encode()
    elif path.suffix == ".jsonl":
        rows = [_scrub(json.loads(line)) for line in path_text.decode().splitlines() if line.strip()]
        data = json.dumps(rows, sort_keys=True).encode()
    elif path.suffix == ".csv":
        import io

        import pandas as pd

        df = pd.read_csv(io.BytesIO(path_text), dtype=str, keep_default_na=False)
        df = df[[c for c in df.columns if not _volatile(c)]]
        data = df.to_csv(index=False).encode()
    elif path.suffix in (".md", ".txt", ".yaml"):
        data = "\n".join(line for line in path_text.decode(errors="replace").splitlines()
                         if not any(v in line.lower() for v in ("elapsed", "it/s", "date", "seconds",
                                                                 "created", "weights hash"))).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def digest_tree(root: Path, work: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): digest_file(p, work) for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in SUFFIXES and "cache" not in p.relative_to(root).parts
            and p.name not in ("config.yaml", "mauc.png")}  # the plot's title names the data folder


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
        out.update({f"{part}/{k}": v for k, v in digest_tree(work / part, work).items()})
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
