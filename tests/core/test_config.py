import dataclasses

import pytest

from cxraug.core import config as C
from cxraug.core.errors import CxraugError


@dataclasses.dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10
    arch: str = "resnet18"
    labels: list[str] = dataclasses.field(default_factory=lambda: ["pneumonia"])

    def validate(self):
        if self.steps <= 0:
            raise C.ConfigError(f"train.steps: must be > 0, got {self.steps}")


@dataclasses.dataclass
class Outer:
    train: Inner = dataclasses.field(default_factory=Inner)
    seed: int = 0
    out: str | None = None


def test_layering_defaults_recipe_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  lr: 0.5\n  steps: 3\nseed: 7\n")
    cfg = C.load(Outer, recipe, ["train.steps=5", "train.labels=[edema, pneumonia]"])
    assert cfg.train.lr == 0.5 and cfg.train.steps == 5 and cfg.seed == 7
    assert cfg.train.labels == ["edema", "pneumonia"] and cfg.train.arch == "resnet18"


def test_unknown_key_is_named(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  lrr: 0.5\n")
    with pytest.raises(C.ConfigError, match=r"unknown config key train\.'lrr'.*valid keys here: lr"):
        C.load(Outer, recipe)
    with pytest.raises(C.ConfigError, match="unknown config key 'sed'"):
        C.load(Outer, None, ["sed=1"])


def test_type_and_range_errors():
    with pytest.raises(C.ConfigError, match="train.steps: expected int"):
        C.load(Outer, None, ["train.steps=many"])
    with pytest.raises(C.ConfigError, match="must be > 0"):
        C.load(Outer, None, ["train.steps=0"])
    with pytest.raises(C.ConfigError, match="expected KEY=VALUE"):
        C.load(Outer, None, ["train.steps"])


def test_missing_and_bad_recipe(tmp_path):
    with pytest.raises(C.ConfigError, match="recipe file not found"):
        C.load(Outer, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(C.ConfigError, match="not valid YAML"):
        C.load(Outer, bad)


def test_saved_config_round_trips(tmp_path):
    cfg = C.load(Outer, None, ["seed=3", "out=runs/x"])
    path = C.save(cfg, tmp_path / "run")
    again = C.load(Outer, path)
    assert again == cfg


@pytest.mark.parametrize("option", ["--shard", "--job"])
@pytest.mark.parametrize("text", ["2/2", "a/b", "0/0", "1", "-1/3", "1/2/3", ""])
def test_parse_slice_refuses_what_is_not_a_share(option, text):
    with pytest.raises(CxraugError, match=f"^{option} "):
        C.parse_slice(text, option)


def test_parse_slice_reads_shares():
    assert C.parse_slice("2/3", "--job") == (2, 3) and C.parse_slice(None, "--job") == (0, 1)


def test_non_finite_numbers_are_refused_naming_the_key():
    """``--set x=nan`` / ``.inf`` slip past range checks (every comparison with NaN is False)."""
    from cxraug.cohorts.config import SynthConfig

    for value in ("nan", ".inf", "-.inf", "inf"):
        with pytest.raises(C.ConfigError, match="max_attempts: must be a finite number, got"):
            C.load(SynthConfig, None, ["labels=[pneumonia]", "n=4", f"max_attempts={value}"])
