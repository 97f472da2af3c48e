"""The CLI as a user runs it: exit codes and one-line errors."""

import subprocess
import sys

from cxraug import __version__
from cxraug.cli.main import main


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "data" in out and "quickstart" in out


def test_data_info_embedded_sample(capsys):
    assert main(["data", "info"]) == 0
    out = capsys.readouterr().out
    assert "kermany: 410 images" in out and "Pneumonia" in out and "train" in out


def test_data_info_fixture_nih(nih_fixture, capsys):
    assert main(["data", "info", "--data", str(nih_fixture)]) == 0
    out = capsys.readouterr().out
    assert "nih14: 40 images" in out and "Pleural Effusion" in out and "Emphysema" in out


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "info", "--data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "data path not found" in err and "\n" not in err
    (tmp_path / "manifest.csv").write_text("file\nx.png\n")
    assert main(["data", "info", "--data", str(tmp_path)]) == 2
    assert "missing column(s) path" in capsys.readouterr().err


def test_console_script_exit_code(tmp_path):
    """The installed entry point: no traceback, exit code 2."""
    proc = subprocess.run([sys.executable, "-m", "cxraug.cli.main", "data", "info", "--data",
                           str(tmp_path / "nope")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "data path not found" in proc.stderr


def test_real_data_info(data_root, capsys):
    assert main(["data", "info", "--data", str(data_root / "kermany")]) == 0
    out = capsys.readouterr().out
    assert "5840 images" in out and "624" in out
