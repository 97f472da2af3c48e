"""A component folder's config.json is checked against the class it names before anything is
built: an unknown key, a missing argument or a wrong type is one line naming the file and key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cxraug.cli.main import main
from cxraug.core.errors import WeightsError
from cxraug.models.adapter import DiseaseAdapter
from cxraug.models.uvit import UViT

TINY = {"in_channels": 4, "latent_size": 4, "patch_size": 2, "width": 16, "depth": 2, "heads": 2,
        "context_dim": 8, "num_context_tokens": 2}
SHIPPED = Path(__file__).resolve().parents[2] / "cxraug" / "assets" / "models" / "kermany-128"


def _edit(folder: Path, **changes) -> Path:
    cfg = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is ...:
            cfg["args"].pop(key)
        else:
            cfg["args"][key] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder / "config.json"


@pytest.mark.parametrize("cls", [UViT, DiseaseAdapter])
@pytest.mark.parametrize("change,match", [
    ({"bogus_key": 1}, r"args\.bogus_key is not an argument of {cls}"),
    ({"depth": "abc"}, r'args\.depth is "abc", not int'),
    ({"mlp_ratio": [4]}, r"args\.mlp_ratio is \[4\], not float"),
    ({"time_mlp": 1}, r"args\.time_mlp is 1, not bool"),
    ({"width": 2.5}, r"args\.width is 2\.5, not int"),
    ({"depth": 3}, r"its args do not build a {cls}"),  # right type, refused by the class itself
])
def test_bad_args_are_one_line_naming_file_and_key(tmp_path, cls, change, match):
    folder = cls(**TINY).save_pretrained(tmp_path / "c")
    path = _edit(folder, **change)
    with pytest.raises(WeightsError, match=match.format(cls=cls.__name__)) as e:
        cls.from_pretrained(folder)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


def test_args_must_be_an_object_and_complete(tmp_path):
    from cxraug.classify.model import Classifier

    folder = Classifier("resnet10t", ["pneumonia"], image_size=32).save_pretrained(tmp_path / "clf")
    _edit(folder, arch=...)
    with pytest.raises(WeightsError, match=r"args\.arch is missing \(Classifier needs it\)"):
        Classifier.from_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(cfg | {"args": ["resnet10t"]}))
    with pytest.raises(WeightsError, match="'args' must be an object"):
        Classifier.from_pretrained(folder)


def test_good_configs_still_load(tmp_path):
    """JSON has no tuples: a list stands for a tuple / Sequence argument (Classifier.label_names)."""
    from cxraug.classify.model import Classifier

    folder = Classifier("resnet10t", ("pneumonia", "effusion"), image_size=32).save_pretrained(tmp_path / "clf")
    assert Classifier.from_pretrained(folder).args["label_names"] == ["Pneumonia", "Pleural Effusion"]
    assert UViT.from_pretrained(UViT(**TINY).save_pretrained(tmp_path / "u")).args["width"] == 16


def test_cli_names_the_damaged_model_file(tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(SHIPPED, model)
    path = _edit(model / "denoiser", depth="abc")
    code = main(["generate", "--model", str(model), "--labels", "pneumonia", "--n", "1", "--out",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {path}: args.depth") and err.count("\n") == 1, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("echo this must never run",))


def test_pickled_code_is_refused_in_one_whole_line_without_torch_warnings(tmp_path):
    """The refusal names what the file holds, is not cut mid-word, and torch's warning about
    the pickle protocol is not printed beside it (a plain ``pickle.dump`` file triggers it)."""
    import pickle
    import subprocess
    import sys

    import torch

    torch.save({"state_dict": _RunsCode()}, tmp_path / "evil.pth")
    with (tmp_path / "plain.pkl").open("wb") as f:
        pickle.dump({"weight": [1.0, 2.0]}, f, protocol=4)
    for name, held in (("evil.pth", "objects (posix.system),"), ("plain.pkl", "objects,")):
        proc = subprocess.run(
            [sys.executable, "-m", "cxraug.cli.main", "train", "classifier", "--epochs", "1",
             "--set", f"classifier.pretrained={tmp_path / name}", "--out",
             str(tmp_path / f"r-{name}")],
            capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False)
        text = proc.stdout + proc.stderr
        lines = [ln for ln in text.splitlines() if ln.strip()]
        assert proc.returncode == 2 and "Warning" not in text and "never run" not in text, text
        assert lines[-1].startswith(f"error: {tmp_path / name}: holds pickled Python {held}"), text
        assert lines[-1].endswith("plain tensor checkpoint (torch.load(weights_only=True))"), text
