"""A cohort's output folder: its layout, atomic file writes, the per-shard manifest part files
and the image writers (PNG, or DICOM that says it is synthetic).

Crash safety rests on two rules: a file only ever appears under its final name complete
(written to a temporary name, fsynced, renamed), and a manifest row is appended (and fsynced)
only after its image exists. On restart the rows are the truth: a cut-off last row is dropped,
and image files without a row are deleted and regenerated.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxraug.core.errors import CxraugError, DataError, writing
from cxraug.data.tables import read_csv

#: Manifest columns that hold text: read as text, so an id like ``000001`` or a generator hash
#: like ``75e8231879992875`` (a float to pandas' type inference) stays what was written.
MANIFEST_TEXT = ("id", "file", "prompt", "hint", "target", "sampler", "generator", "fidelity",
                 "fidelity_label", "memorisation", "nn_id", "reason")


def read_manifest(path: Path, required: tuple[str, ...] = ("file",)) -> pd.DataFrame:
    """The one reader of a cohort's ``manifest.csv``: its text columns as text (empty, not NaN),
    label, score and count columns as numbers, ``accepted`` as bool (``True``/``1``).

    A missing or unreadable file, a ``required`` column that is absent, no rows at all, or a
    ``file`` outside the manifest's folder (absolute, or ``..`` leading out: a cohort lists only
    its own images) is a one-line :class:`~cxraug.core.errors.DataError` naming the file."""
    df = read_csv(Path(path), required, "cohort manifest from cxraug synth",
                  dtype=dict.fromkeys(MANIFEST_TEXT, str), keep_default_na=True)
    text = [c for c in MANIFEST_TEXT if c in df.columns]
    df[text] = df[text].fillna("")
    if "file" in df.columns:
        _check_inside(Path(path), df["file"])
    if "accepted" in df.columns:
        df["accepted"] = df["accepted"].astype(str).str.strip().str.lower().isin(["true", "1", "1.0"])
    return df


def _check_inside(manifest: Path, files: pd.Series) -> None:
    """Each ``file`` is a relative path that stays inside the manifest's folder (as written: a
    symbolic link inside the folder is followed)."""
    for i, f in enumerate(files):
        norm = os.path.normpath(f)
        if not f or os.path.isabs(f) or norm == ".." or norm.startswith(".." + os.sep):
            raise DataError(f"{manifest}: row {i + 2}: file {f!r} is not inside the cohort folder "
                            f"{manifest.parent}; a cohort's manifest lists only its own images, "
                            "by paths relative to it (images/000001.png)")


@dataclass
class CohortDir:
    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    settings = property(lambda self: self.root / "synth.json")
    plan = property(lambda self: self.root / "plan.csv")
    topups = property(lambda self: self.root / "topups.csv")
    gates = property(lambda self: self.root / "gates.json")
    images = property(lambda self: self.root / "images")
    rejected = property(lambda self: self.root / "rejected")
    parts = property(lambda self: self.root / "parts")
    manifest = property(lambda self: self.root / "manifest.csv")

    def part(self, shard: tuple[int, int]) -> Path:
        return self.parts / f"shard-{shard[0]}-of-{shard[1]}.jsonl"


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with writing(path), tmp.open("wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or Ctrl-C: leave no half-written temporary
        raise
    os.replace(tmp, path)


def fsync_dir(folder: Path) -> None:
    """Make renames inside ``folder`` durable (a power cut, not only a kill, keeps them)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_rows(parts: Path, repair: Path | None = None) -> dict[int, dict]:
    """Manifest rows of every part file, by index (first occurrence wins).

    A line cut short by a kill (no newline / not JSON) is ignored; in the ``repair`` part file
    (this process's own) it is cut off so that new rows start on a clean line.
    """
    rows: dict[int, dict] = {}
    for p in sorted(parts.glob("*.jsonl")) if parts.is_dir() else []:
        data = p.read_bytes()
        good = data[:data.rfind(b"\n") + 1]
        if p == repair and len(good) != len(data):
            with p.open("r+b") as f:
                f.truncate(len(good))
        for line in good.decode().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows.setdefault(int(row["index"]), row)
    return rows


def _index_of(path: Path) -> int | None:
    stem = path.name.lstrip(".").split(".")[0]
    return int(stem) if stem.isdigit() else None


def clean_orphans(out: CohortDir, shard: tuple[int, int], done: dict[int, dict]) -> int:
    """Delete this shard's image files that have no manifest row (a kill between writing an
    image and its row) and leftover temporaries; they are regenerated. Returns how many."""
    removed = 0
    for folder in (out.images, out.rejected):
        for p in folder.iterdir() if folder.is_dir() else []:
            i = _index_of(p)
            if i is None or i % shard[1] != shard[0]:
                continue
            if p.name.endswith(".tmp") or i not in done or done[i]["file"] != f"{folder.name}/{p.name}":
                p.unlink(missing_ok=True)
                removed += 1
    return removed


def csv_text(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, lineterminator="\n")


# ------------------------------------------------------------------------------- the folder

def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v}
    return out


def open_output(out: CohortDir, settings: dict, plan: pd.DataFrame, overwrite: bool) -> None:
    """Create the folder, or check that it holds this very cohort (then we resume)."""
    ours = {p.name for p in (out.settings, out.plan, out.images, out.rejected, out.parts)}
    if out.root.exists() and any(out.root.iterdir()):
        if not out.settings.is_file():  # never delete a folder we did not make
            foreign = [p.name for p in out.root.iterdir() if not p.name.startswith(".") and (
                p.name not in ours or p.is_file() or any(p.iterdir()))]
            if foreign:
                raise CxraugError(f"{out.root}: folder exists and is not a cxraug cohort (it holds "
                                  f"{foreign[0]}); choose another --out")
            # only our own (empty) layout: another shard is creating this cohort right now
        elif overwrite:
            shutil.rmtree(out.root)
        if out.settings.is_file() and not overwrite:
            old, new = _flat(json.loads(out.settings.read_text())), _flat(settings)
            diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            if diff:
                k = diff[0]
                raise CxraugError(f"{out.root}: holds a cohort made with other arguments ({k}: "
                                  f"{old.get(k)!r} now {new.get(k)!r}); rerun the original "
                                  "command to resume, or pass --overwrite, or another --out")
            if out.plan.is_file() and out.plan.read_text() != csv_text(plan):
                raise CxraugError(f"{out.plan}: the plan differs from the one on disk (generator "
                                  "training labels or prompt templates changed?); pass --overwrite "
                                  "or another --out")
    for folder in (out.root, out.images, out.rejected, out.parts):
        folder.mkdir(parents=True, exist_ok=True)
    if not out.settings.is_file():
        write_atomic(out.settings, json.dumps(settings, indent=2) + "\n")
    if not out.plan.is_file():
        write_atomic(out.plan, csv_text(plan))


# ------------------------------------------------------------------------------------ images

def write_image(path: Path, image: np.ndarray, fmt: str, row: dict, cohort_id: str) -> None:
    """``uint8 [H, W]`` -> PNG or DICOM at ``path``, atomically (temporary name + rename)."""
    buf = io.BytesIO()
    if fmt == "png":
        from PIL import Image

        Image.fromarray(image).save(buf, format="PNG")
    else:
        dicom_dataset(image, row, cohort_id).save_as(buf, enforce_file_format=True)
    write_atomic(path, buf.getvalue())


def dicom_dataset(image: np.ndarray, row: dict, cohort_id: str):
    """A Secondary Capture DICOM that says everywhere that it is synthetic.

    Identifiers are made up from the cohort id (a hash of the cohort's settings) and the image
    index, so no real patient is behind them; UIDs are new but deterministic (a regenerated
    image gets the same file) and differ between cohorts.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    uid = lambda *parts: generate_uid(entropy_srcs=["cxraug-synth", cohort_id, *map(str, parts)])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid("image", row["index"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.Modality, ds.ConversionType = "OT", "SYN"  # SYN: synthetic image (Secondary Capture)
    ds.BurnedInAnnotation = "NO"
    ds.PatientName = f"SYNTHETIC^{cohort_id[:8]}^{row['index']}"
    ds.PatientID = f"SYNTH-{cohort_id[:8]}-{row['index']:06d}"
    ds.StudyDescription = "SYNTHETIC chest X-ray cohort (cxraug synth)"
    ds.SeriesDescription = "SYNTHETIC IMAGE - generated by Diff-CXR, not a real patient"
    ds.ImageComments = (f"SYNTHETIC image generated by cxraug (generator {row['generator']}, seed "
                        f"{row['seed']}, target {row['target']}). Not a real patient; not for diagnosis.")
    ds.SeriesNumber, ds.InstanceNumber = 1, int(row["index"]) + 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    return ds
