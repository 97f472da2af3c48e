"""benchmarks/realism_targets.py: each target read from the card and judged at its threshold; cards
of different judges refused."""

import copy
import json

import pytest
from conftest import REPO, load_script

CARD = json.loads((REPO / "benchmarks" / "results" / "quality_kermany-128-v3.json").read_text())


def test_targets_follow_the_card_and_their_thresholds():
    rt = load_script("realism_targets")
    rows = {r["target"].split(" ")[0]: r for r in rt.targets(CARD)}
    st = CARD["image_stats"]["generator"]["synthetic"]["stats"]
    assert rows["FID"]["value"] == f"{CARD['eval']['metrics']['fid']:.1f}" and rows["FID"]["met"]
    assert rows["power"]["value"].split(" / ")[3] == f"{st['power_16-32']['ratio']:.2f}"
    assert not rows["power"]["met"] and not rows["Laplacian"]["met"] and not rows["p1"]["met"]
    moved = copy.deepcopy(CARD)  # the same card with real's percentiles and more power
    s = moved["image_stats"]["generator"]["synthetic"]["stats"]
    for k in ("p1", "p99"):
        s[k]["diff"] = 0.009
    for k in (k for k in s if k.startswith("power_")):
        s[k]["ratio"] = 0.85
    s["laplacian_var"]["ratio"] = 1.16
    moved["eval"]["metrics"]["fid"] = 5.01
    rows = {r["target"].split(" ")[0]: r["met"] for r in rt.targets(moved)}
    assert rows == {"power": True, "Laplacian": False, "p1": True, "two-sample": True, "FID": False,
                    "label": True, "memorisation": True}


def test_committed_comparison_is_what_the_cards_say():
    rt = load_script("realism_targets")
    paths = sorted((REPO / "benchmarks" / "results").glob("realism_targets_*.json"))
    assert paths
    for path in paths:
        rec = json.loads(path.read_text())
        assert rec == json.loads(json.dumps(rt.score(list(rec["rows"])))), path.name
        assert (path.with_suffix(".md")).read_text() == rt.markdown(rec, path.stem[len("realism_targets_"):])


def test_cards_of_different_judges_are_refused(monkeypatch, tmp_path):
    rt = load_script("realism_targets")
    other = copy.deepcopy(CARD)
    other["eval"]["extractor"]["sha256"] = "0" * 64
    for name, card in (("a", CARD), ("b", other)):
        (tmp_path / f"quality_{name}.json").write_text(json.dumps(card))
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    with pytest.raises(SystemExit, match="different judges"):
        rt.score(["a", "b"])
    assert rt.main(["missing", "--out", "x"]) == 2
