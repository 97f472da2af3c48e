"""benchmarks/interval_coverage.py writes its JSON and markdown with the command and no paths."""

import json

from conftest import load_script


def test_interval_coverage_report(tmp_path):
    assert load_script("interval_coverage").main(["--sims", "20", "--out", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / "interval_coverage.json").read_text())
    assert [(r["draws"], r["seeds"]) for r in rec["shapes"]] == [(3, 2), (5, 2), (10, 2), (3, 4)]
    assert all(0 <= r["coverage"] <= 1 for r in rec["shapes"]) and rec["level"] == 0.95
    assert str(tmp_path) not in (tmp_path / "interval_coverage.json").read_text().replace(
        rec["command"], "")
    assert "| 3 | 2 |" in (tmp_path / "interval_coverage.md").read_text()
