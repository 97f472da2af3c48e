"""Bad datasets and bad images (issue #14): each is one line naming the file or field and the fix,
exit code 2, never a traceback and never a silent fallback."""

from __future__ import annotations

import json
import random
import string
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_png
from PIL import Image

from cxraug.cli.main import main
from cxraug.core.errors import DataError
from cxraug.data import labels as L
from cxraug.data.adapters import load_dataset

pytestmark = pytest.mark.no_templates  # nothing here builds prompts: no mined template bank


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --------------------------------------------------------------------- 1. unknown layouts

def test_index_with_unknown_columns_is_an_error_not_an_image_folder(tmp_path, capsys):
    write_png(tmp_path / "images" / "a.png")
    (tmp_path / "index.csv").write_text("file,label,site\nimages/a.png,1,north\n")
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path)
    msg = str(e.value)
    assert "index.csv: its columns match no known layout (found: file, label, site)" in msg
    for expected in ("image_path, split, patient_id, pneumonia", "finding_labels", "with path",
                     "--dataset folder"):
        assert expected in msg
    assert main(["data", "info", "--data", str(tmp_path)]) == 2
    assert "match no known layout" in one_line_error(capsys)
    # asking for the unlabelled folder explicitly still works
    assert len(load_dataset(tmp_path, "folder")) == 1


def test_manifest_with_unknown_columns_lists_the_layouts(tmp_path):
    (tmp_path / "manifest.csv").write_text("file,Pneumonia\na.png,1\n")
    with pytest.raises(DataError, match=r"manifest.csv: missing column\(s\) path") as e:
        load_dataset(tmp_path)
    assert "found: file, Pneumonia" in str(e.value) and "known layouts: kermany" in str(e.value)


def test_kermany_index_without_subtype_is_still_kermany(kermany_fixture):
    index = kermany_fixture / "index.csv"
    df = pd.read_csv(index, dtype=str)
    df.drop(columns="subtype").to_csv(index, index=False)
    ds = load_dataset(kermany_fixture)
    assert ds.name == "kermany" and len(ds) == 24


def test_console_script_prints_no_traceback(tmp_path):
    (tmp_path / "index.csv").write_text("a,b\n1,2\n")
    proc = subprocess.run([sys.executable, "-m", "cxraug.cli.main", "data", "info", "--data",
                           str(tmp_path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "found: a, b" in proc.stderr


# ------------------------------------------------------------------- 2. missing image files

def test_missing_image_files_are_counted_and_named(kermany_fixture, capsys):
    gone = sorted((kermany_fixture / "images_128").glob("*.png"))[:5]
    for p in gone:
        p.unlink()
    with pytest.raises(DataError) as e:
        load_dataset(kermany_fixture)
    msg = str(e.value)
    assert "5 of 24 image files" in msg and "do not exist" in msg and "and 2 more" in msg
    assert f"images_128/{gone[0].name}" in msg and "\n" not in msg
    # data info still shows the counts, then names the missing files and exits 2
    assert main(["data", "info", "--data", str(kermany_fixture)]) == 2
    captured = capsys.readouterr()
    assert "kermany: 24 images" in captured.out
    assert captured.err.count("\n") == 1 and "5 of 24 image files" in captured.err
    # callers that skip unreadable images later keep the rows
    assert len(load_dataset(kermany_fixture, missing="keep")) == 24


def test_manifest_missing_files(tmp_path):
    write_png(tmp_path / "a.png")
    (tmp_path / "manifest.csv").write_text("path,Pneumonia\na.png,1\nb.png,0\n")
    with pytest.raises(DataError, match=r"1 of 2 image files .* do not exist: b.png;"):
        load_dataset(tmp_path)


# --------------------------------------------------------------------------- 3. split values

def _set_splits(index: Path, values: dict[int, str]) -> None:
    df = pd.read_csv(index, dtype=str, keep_default_na=False)
    for i, v in values.items():
        df.loc[i, "split"] = v
    df.to_csv(index, index=False)


def test_unknown_split_value_is_an_error(kermany_fixture, capsys):
    _set_splits(kermany_fixture / "index.csv", {0: "tset", 3: "tset", 5: "tset"})
    with pytest.raises(DataError) as e:
        load_dataset(kermany_fixture)
    msg = str(e.value)
    assert "index.csv: split value 'tset' in 3 row(s)" in msg
    assert "allowed: train, val, test" in msg
    assert main(["data", "info", "--data", str(kermany_fixture)]) == 2
    assert "'tset'" in one_line_error(capsys)


def test_split_case_and_spaces_are_normalised(kermany_fixture):
    _set_splits(kermany_fixture / "index.csv", {0: "Train", 1: " val", 2: "VAL ", 3: ""})
    split = load_dataset(kermany_fixture).table["split"]
    assert list(split[:4]) == ["train", "val", "val", ""]
    assert set(split) == {"train", "val", "test", ""}


@pytest.mark.parametrize("value,fix", [("training", "train"), ("validation", "val"),
                                       ("valid", "val"), ("testing", "test")])
def test_other_split_spellings_are_refused_not_resplit(kermany_fixture, capsys, value, fix):
    """Only train / val / test / blank, as documented: ``training`` was quietly re-split."""
    _set_splits(kermany_fixture / "index.csv", {i: value for i in range(18)})
    with pytest.raises(DataError, match=f"split value '{value}' in 18 row.*rename '{value}' to '{fix}'"):
        load_dataset(kermany_fixture)
    assert main(["data", "info", "--data", str(kermany_fixture)]) == 2
    assert f"'{value}'" in one_line_error(capsys)


def test_assign_splits_refuses_unknown_official_split(kermany_fixture):
    from cxraug.data.splits import assign_splits

    ds = load_dataset(kermany_fixture)
    ds.table.loc[2, "split"] = "holdout"
    with pytest.raises(DataError, match="official split value 'holdout' in 1 image"):
        assign_splits(ds)


# ---------------------------------------------------------- 3b. paths stay inside their folder

def _set_path(index: Path, row: int, value: str, column: str = "image_path") -> None:
    df = pd.read_csv(index, dtype=str, keep_default_na=False)
    df.loc[row, column] = value
    df.to_csv(index, index=False)


@pytest.mark.parametrize("value", ["../../../../etc/passwd", "/etc/hostname",
                                   "../nih14/images_64/00000000_000.png",
                                   "images_128/../../outside.png"])
def test_index_rows_outside_the_dataset_are_refused(kermany_fixture, nih_fixture, capsys, value):
    (kermany_fixture.parent / "outside.png").write_bytes((kermany_fixture / "images_128" /
                                                          "train_000.png").read_bytes())
    _set_path(kermany_fixture / "index.csv", 4, value)
    with pytest.raises(DataError, match=r"index.csv: row 6 \(image .*\): file .* is outside the "
                                        "dataset folder"):
        load_dataset(kermany_fixture)
    assert main(["data", "info", "--data", str(kermany_fixture)]) == 2
    assert "row 6" in one_line_error(capsys)


def test_nih_index_row_outside_is_refused(nih_fixture):
    _set_path(nih_fixture / "index.csv", 0, "/etc/hostname", "image_path_64")
    with pytest.raises(DataError, match="row 2 .*/etc/hostname is outside"):
        load_dataset(nih_fixture)


def test_paths_inside_the_folder_are_kept(kermany_fixture):
    (kermany_fixture / "images_128" / "sub").mkdir()
    _set_path(kermany_fixture / "index.csv", 4, "images_128/./sub/../train_004.png")
    assert len(load_dataset(kermany_fixture)) == 24


def test_manifest_relative_paths_stay_inside_absolute_ones_are_documented(tmp_path):
    img = write_png(tmp_path / "elsewhere" / "a.png")
    folder = tmp_path / "mine"
    write_png(folder / "b.png")
    (folder / "manifest.csv").write_text(f"path,pneumonia\nb.png,1\n{img},0\n")
    assert len(load_dataset(folder)) == 2  # an absolute path: the manifest layout allows it
    (folder / "manifest.csv").write_text("path,pneumonia\nb.png,1\n../elsewhere/a.png,0\n")
    with pytest.raises(DataError, match=r"manifest.csv: row 3 .*a.png is outside"):
        load_dataset(folder)


@pytest.mark.parametrize("file", ["../real/r0.png", "/tmp/r0.png", "images/../../real/r0.png"])
def test_cohort_manifest_files_outside_the_cohort_are_refused(tmp_path, capsys, file):
    """eval (and bench) read a cohort's manifest through one reader: real images listed as a
    cohort's synthetic ones are refused before anything is scored."""
    from conftest import write_cohort

    from cxraug.cohorts.store import read_manifest

    cohort = write_cohort(tmp_path / "cohort", n=8)
    write_png(tmp_path / "real" / "r0.png")
    df = pd.read_csv(cohort / "manifest.csv", dtype=str)
    df["target"] = np.where(df["Pneumonia"] == "1", "pneumonia", "negative")
    df.loc[3, "file"] = file
    df.to_csv(cohort / "manifest.csv", index=False)
    with pytest.raises(DataError, match=r"manifest.csv: row 5: file .* is not inside the cohort"):
        read_manifest(cohort / "manifest.csv")
    code = main(["eval", "--real", "sample:kermany", "--synth", str(cohort), "--extractor",
                 "pixels", "--out", str(tmp_path / "eval.json")])
    assert code == 2 and "row 5" in one_line_error(capsys)
    assert not (tmp_path / "eval.json").exists()


# ------------------------------------------------------------------- 4. label column names

def _manifest(tmp_path, header: str, row: str) -> Path:
    write_png(tmp_path / "a.png")
    (tmp_path / "manifest.csv").write_text(f"path,{header}\na.png,{row}\n")
    return tmp_path


@pytest.mark.parametrize("header,row,match", [
    ("Pneumonai", "1", r"column 'Pneumonai' looks like a misspelt label 'Pneumonia'"),
    ("Cardiomegally,site", "1,x", r"column 'Cardiomegally' looks like a misspelt label 'Cardiomegaly'"),
    ("Pneumonia,pneumonia", "1,0", r"columns 'Pneumonia' and 'pneumonia' both give the label 'Pneumonia'"),
    ("effusion,Pleural Effusion", "1,1", r"columns 'effusion' and 'Pleural Effusion' both give"),
    ("Pneumonia,Pneumonia", "1,0", r"column 'Pneumonia' appears more than once"),
    ("Patient ID,Edema", "p1,1", r"column 'Patient ID' is read as an extra column, not as 'patient_id'"),
])
def test_manifest_label_column_mistakes(tmp_path, capsys, header, row, match):
    root = _manifest(tmp_path, header, row)
    with pytest.raises(DataError, match=match):
        load_dataset(root)
    assert main(["data", "info", "--data", str(root)]) == 2
    one_line_error(capsys)


def test_manifest_extras_that_are_not_labels_are_kept(tmp_path):
    ds = load_dataset(_manifest(tmp_path, "Pneumonia,site,age,fracture_site,pneumothorax_size",
                                "1,n,40,rib,2"))
    assert ds.table.iloc[0]["Pneumonia"] == 1
    assert ds.extra_labels == ["site", "age", "fracture_site", "pneumothorax_size"]


def test_nih_label_columns_must_agree_with_finding_labels(nih_fixture):
    index = nih_fixture / "index.csv"
    df = pd.read_csv(index, dtype=str, keep_default_na=False)
    assert df.loc[1, "finding_labels"] == "Pneumonia"
    df.loc[1, "Pneumonia"] = "0"
    df.to_csv(index, index=False)
    with pytest.raises(DataError, match=r"column Pneumonia \(0\) and finding_labels \('Pneumonia'\) "
                                        r"disagree in 1 row\(s\), first row 3"):
        load_dataset(nih_fixture)


def test_kermany_pneumonia_and_subtype_must_agree(kermany_fixture):
    index = kermany_fixture / "index.csv"
    df = pd.read_csv(index, dtype=str, keep_default_na=False)
    df.loc[0, "subtype"] = "virus"  # row 0 is pneumonia 0
    df.to_csv(index, index=False)
    with pytest.raises(DataError, match=r"row 2: columns pneumonia \(0\) and subtype \(virus\) disagree"):
        load_dataset(kermany_fixture)


def test_closest_label():
    assert L.closest("Pnuemonia") == "Pneumonia" and L.closest("atelectsis") == "Atelectasis"
    assert L.closest("Fractures") == "Fracture" and L.closest("No Findings") == "No Finding"
    for name in ("pneumonia", "site", "sex", "Pleural Effusion size", "edema_grade"):
        assert L.closest(name) is None, name


# ------------------------------------------------------------------------------ 5. bad images

def png_declaring(path: Path, width: int, height: int) -> Path:
    """A tiny valid PNG whose IHDR claims ``width x height`` pixels (CRC fixed up)."""
    write_png(path, size=8)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def truncated_png(path: Path) -> Path:
    write_png(path, size=64)
    path.write_bytes(path.read_bytes()[:200])
    return path


@pytest.mark.parametrize("size", [60000, 10000])  # above 2x PIL's limit (error) and above 1x (warning)
def test_decompression_bomb_is_a_bad_image(tmp_path, size):
    from cxraug.data.transforms import ImageReadError, decode_bytes, load_grayscale

    limit, filters = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    path = png_declaring(tmp_path / "bomb.png", size, size)
    with pytest.raises(ImageReadError, match=r"bomb.png: not read, the header declares a huge image"):
        load_grayscale(path)
    with pytest.raises(ImageReadError, match="huge image"):
        decode_bytes(path.read_bytes(), "bomb.png")
    assert Image.MAX_IMAGE_PIXELS == limit and list(warnings.filters) == filters  # nothing global


def _with_sbit(path: Path, bits: int) -> Path:
    """Insert a PNG ``sBIT`` chunk (significant bits of a grayscale image) after IHDR."""
    data = path.read_bytes()
    chunk = b"sBIT" + bytes([bits])
    sbit = struct.pack(">I", 1) + chunk + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    path.write_bytes(data[:33] + sbit + data[33:])
    return path


def test_16_bit_png_is_scaled_by_its_bit_depth(tmp_path):
    """Not by its own min/max, which shifted a 16-bit copy up to 6 grey levels off its 8-bit
    original and stretched a faint image to full contrast."""
    from cxraug.data.transforms import load_grayscale

    original = np.random.default_rng(0).integers(20, 200, (32, 32), dtype=np.uint8)
    Image.fromarray(original).save(tmp_path / "a8.png")
    Image.fromarray(original.astype(np.uint16) * 257).save(tmp_path / "a16.png")
    assert Image.open(tmp_path / "a16.png").mode.startswith("I;16")
    np.testing.assert_array_equal(load_grayscale(tmp_path / "a16.png"), load_grayscale(tmp_path / "a8.png"))
    twelve = ((original.astype(np.int64) * 4095 + 127) // 255).astype(np.uint16)
    Image.fromarray(twelve).save(tmp_path / "a12.png")
    got = load_grayscale(_with_sbit(tmp_path / "a12.png", 12)).astype(int)
    assert np.abs(got - original).max() <= 1  # 12 significant bits, as its sBIT chunk says
    faint = np.full((8, 8), 1000, np.uint16)
    faint[0, 0] = 2000
    Image.fromarray(faint).save(tmp_path / "faint.png")
    assert load_grayscale(tmp_path / "faint.png").max() == round(2000 / 65535 * 255)


def test_corrupt_images_are_bad_images(tmp_path):
    from cxraug.data.transforms import ImageReadError, load_grayscale

    rng = random.Random(0)
    good = write_png(tmp_path / "good.png", size=64).read_bytes()
    for i in range(200):  # truncated and bit-flipped copies: ImageReadError or a valid image
        data = bytearray(good[:rng.randrange(1, len(good))] if i % 2 else good)
        for _ in range(rng.randrange(0, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path = tmp_path / f"bad{i}.png"
        path.write_bytes(bytes(data))
        try:
            img = load_grayscale(path)
        except ImageReadError as e:
            assert str(e).startswith(str(path)) and "\n" not in str(e)
        else:
            assert img.dtype == np.uint8 and img.ndim == 2


@pytest.fixture
def tiny_vae_run(tmp_path):
    from cxraug.models.vae_train import VAEConfig, build_vae

    run = tmp_path / "run"
    build_vae(VAEConfig(image_size=32, block_out_channels=[8, 16, 16])).save(run / "vae")
    return run


def test_filter_bad_images_fail_or_are_skipped_and_listed(kermany_fixture, tiny_vae_run, tmp_path,
                                                          capsys):
    images = kermany_fixture / "images_128"
    png_declaring(images / "train_003.png", 60000, 60000)
    truncated_png(images / "train_004.png")
    base = ["filter", "--data", str(kermany_fixture), "--model", str(tiny_vae_run),
            "--set", "lnfs.manifold=pca", "--set", "lnfs.kmeans_n_init=1"]
    out = tmp_path / "lnfs"
    assert main([*base, "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert "train_003.png" in err and "huge image" in err and "--skip-bad" in err
    assert not out.exists() or not any(out.iterdir())

    assert main([*base, "--out", str(out), "--skip-bad"]) == 0
    printed = capsys.readouterr().out
    assert "skipped 2 unreadable image(s)" in printed
    skipped = pd.read_csv(out / "skipped.csv")
    assert sorted(Path(p).name for p in skipped["path"]) == ["train_003.png", "train_004.png"]
    assert skipped["reason"].str.contains("huge image").sum() == 1
    assert skipped["reason"].str.contains("truncated").sum() == 1
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["skipped"]) == 2 and summary["overall"]["images"] == 22
    assert len(pd.read_csv(out / "keep.csv")) == 22
    # the image cache now holds the dataset with two bad images: still refused without the flag
    assert main([*base, "--out", str(tmp_path / "again")]) == 2
    err = one_line_error(capsys)
    assert "train_003.png" in err and "huge image" in err and "2 unreadable in total" in err


def test_filter_missing_file_refused_unless_skip_bad(kermany_fixture, tiny_vae_run, tmp_path, capsys):
    (kermany_fixture / "images_128" / "train_005.png").unlink()
    base = ["filter", "--data", str(kermany_fixture), "--model", str(tiny_vae_run),
            "--set", "lnfs.manifold=pca", "--set", "lnfs.kmeans_n_init=1"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 2
    assert "1 of 24 image files" in one_line_error(capsys)
    assert main([*base, "--out", str(tmp_path / "b"), "--skip-bad"]) == 0
    skipped = pd.read_csv(tmp_path / "b" / "skipped.csv")
    assert list(skipped["reason"]) == ["image file not found"]


# ------------------------------------------------------------------------ 6. rule labeler

def random_reports() -> dict[str, str]:
    rng = random.Random(0)
    return {
        "printable": "".join(rng.choices(string.printable, k=20000)),
        "letters": "".join(rng.choices(string.ascii_lowercase + " " * 4, k=20000)),
        "bytes": bytes(rng.getrandbits(8) for _ in range(20000)).decode("latin-1"),
        "utf8": bytes(rng.getrandbits(8) for _ in range(20000)).decode("utf-8", "replace"),
        "junk": "x9$#fx",
    }


def test_empty_reports_are_unlabelled_not_no_finding():
    from cxraug.data.labeler import RuleLabeler, text_problem

    lab = RuleLabeler()
    for text in ("", "   \n\t  ", None, "FINDINGS:  IMPRESSION: ", "INDICATION: cough."):
        assert text_problem(text) == "empty"
        assert np.isnan(lab.label_text(text)).all(), repr(text)
    out = lab.label(["", "No acute cardiopulmonary abnormality."])
    assert np.isnan(out[0]).all() and out[1][L.index("No Finding")] == L.POSITIVE


def test_random_text_yields_no_finding_at_all():
    from cxraug.data.labeler import RuleLabeler, text_problem

    lab = RuleLabeler()
    for name, text in random_reports().items():
        assert text_problem(text).startswith("not report text"), name
        assert np.isnan(lab.label_text(text)).all(), name
    # without the gate these texts would be mislabelled: the rule still sees "fx"
    assert lab.label_text("Fx.")[L.index("Fracture")] == L.POSITIVE


@pytest.mark.parametrize("text", [
    "Mild cardiomegaly.", "Osteopenia.", "Lungs clear. T12 compression deformity, 3.5 cm.",
    ("1. Chest. No visible active cardiopulmonary disease. 2. Left hip. Advanced "
     "posttraumatic osteoarthritis."),
])
def test_real_reports_pass_the_text_gate(text):
    from cxraug.data.labeler import text_problem

    assert text_problem(text) is None


def test_label_cli_leaves_empty_and_junk_reports_blank(tmp_path, capsys):
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "a.txt").write_text("Small right pneumothorax.")
    (folder / "b.txt").write_text("   \n")
    (folder / "c.txt").write_text(random_reports()["printable"])
    out = tmp_path / "labels.csv"
    assert main(["label", str(folder), "--out", str(out)]) == 0
    df = pd.read_csv(out, dtype=str, keep_default_na=False).set_index("id")
    assert df.loc["a", "Pneumothorax"] == "1.0"
    assert (df.loc[["b", "c"]] == "").all().all()  # blank, No Finding included
    printed = " ".join(capsys.readouterr().out.split())
    assert "left blank" in printed and "2 report(s), 1 empty and 1 not report text" in printed


# ----------------------------------------------------------------------- 7. bench arguments

@pytest.mark.parametrize("value,match", [
    ("", "--real-frac '': empty; give one or more fractions in (0, 1]"),
    (" , ", "--real-frac ' , ': empty"),
    ("0.1,,1", "'' is not a number"),
    ("abc", "'abc' is not a number; give one or more fractions in (0, 1]"),
    ("nan", "must be in (0, 1]"),
])
def test_bench_real_frac_values(value, match, tmp_path, capsys):
    assert main(["bench", "--real-frac", value, "--arms", "real,real+dup",
                 "--out", str(tmp_path / "b"), "--dry-run"]) == 2
    assert match in one_line_error(capsys)
    assert not (tmp_path / "b").exists()


def test_bench_real_frac_ok_dry_run(tmp_path, capsys):
    assert main(["bench", "--real-frac", " 0.1, 1.0 ", "--arms", "real", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "- 0.1" in out and "- 1.0" in out
