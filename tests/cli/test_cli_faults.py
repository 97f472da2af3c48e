"""Every command and subcommand, walked with wrong input: exit code 2, one error line under
click's usage hint, never a traceback.

Commands are discovered from the Typer app, so a new command is covered as soon as it is
registered. Each call goes through :func:`cxraug.cli.main.main`, the error boundary of the
installed ``cxraug`` script (``entry`` is ``sys.exit(main())``); none of them gets past argument
parsing, so nothing here does real work.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest
import typer.main

import cxraug.data.labeler  # noqa: F401  (cxraug label imports it before checking --out)
from cxraug.cli.main import app, main

pytestmark = pytest.mark.no_templates  # nothing here reaches a prompt template

ROOT = typer.main.get_command(app)
FORBIDDEN = ("Traceback", "typer._click", "click.exceptions")


def _walk(cmd, path=()):
    """``(path, command)`` for every command and group below ``cmd``, depth first."""
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield (*path, name), sub
        yield from _walk(sub, (*path, name))


COMMANDS = list(_walk(ROOT))
GROUPS = [((), ROOT)] + [(p, c) for p, c in COMMANDS if hasattr(c, "commands")]
LEAVES = [(p, c) for p, c in COMMANDS if not hasattr(c, "commands")]


def _kind(param) -> type | None:
    """The scalar Python type a parameter parses to (int, float, str, Path, bool...)."""
    descriptor = getattr(param, "type_descriptor", None)  # typer >= 0.2x
    if descriptor is not None:
        return descriptor.annotation if isinstance(descriptor.annotation, type) else None
    name = getattr(getattr(param, "type", None), "name", "")
    return {"integer": int, "integer range": int, "float": float, "float range": float}.get(name)


def _is_option(param) -> bool:
    return bool(param.opts) and param.opts[0].startswith("-")


def _dummy(param) -> list[str]:
    """A well-typed value for ``param`` (the option name first for an option)."""
    value = {int: "1", float: "0.5"}.get(_kind(param), "x")
    return [param.opts[0], value] if _is_option(param) else [value]


def _required(cmd) -> list:
    return [p for p in cmd.params if p.required]


def _args(cmd, skip=None) -> list[str]:
    """Arguments first, then options: every required parameter but ``skip``, well typed."""
    req = [p for p in _required(cmd) if p is not skip]
    return ([v for p in req if not _is_option(p) for v in _dummy(p)]
            + [v for p in req if _is_option(p) for v in _dummy(p)])


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out + err


def _assert_usage_error(argv: list[str], code: int, text: str, *expect: str) -> None:
    where = f"cxraug {' '.join(argv)}"
    assert code == 2, f"{where}: exit {code}\n{text}"
    for bad in FORBIDDEN:
        assert bad not in text, f"{where}: {bad!r} in the output\n{text}"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 3, f"{where}: expected usage, hint and one error line\n{text}"
    usage, hint, error = lines
    assert usage.lower().startswith("usage: cxraug") and hint.lower().startswith("try 'cxraug") \
        and "--help" in hint, f"{where}: no usage hint\n{text}"
    assert error.lower().startswith("error: ") and len(error) <= 200, f"{where}: error line\n{text}"
    for e in expect:
        assert e.lower() in error.lower(), f"{where}: {e!r} not in {error!r}"


def test_the_walk_covers_every_command():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"data", "data info", "train", "synth", "eval", "bench", "label", "filter", "generate",
            "export", "quickstart"} <= names
    assert len(LEAVES) >= 11


@pytest.mark.parametrize("path,cmd", [pytest.param(p, c, id=" ".join(p)) for p, c in LEAVES
                                      if _required(c)])
def test_missing_required_parameter(path, cmd, capsys):
    for param in _required(cmd):
        argv = [*path, *_args(cmd, skip=param)]
        code, text = _run(argv, capsys)
        name = param.opts[0] if _is_option(param) else f"argument '{param.name}'"
        _assert_usage_error(argv, code, text, "missing", name)


@pytest.mark.parametrize("path,cmd", [pytest.param(p, c, id=" ".join(p) or "cxraug")
                                      for p, c in GROUPS + LEAVES])
def test_unknown_option(path, cmd, capsys):
    argv = [*path, "--bogus"]
    code, text = _run(argv, capsys)
    _assert_usage_error(argv, code, text, "--bogus")


NUMERIC = [pytest.param(p, c, o, id=f"{' '.join(p)} {o.opts[0]}") for p, c in LEAVES
           for o in c.params if _is_option(o) and _kind(o) in (int, float)]


def test_numeric_options_are_found():
    assert {"--n", "--negatives", "--epochs", "--image-size", "--batch-size"} \
        <= {p.values[2].opts[0] for p in NUMERIC}


@pytest.mark.parametrize("path,cmd,opt", NUMERIC)
def test_wrong_type_for_numeric_option(path, cmd, opt, capsys):
    argv = [*path, *_args(cmd), opt.opts[0], "abc"]
    code, text = _run(argv, capsys)
    _assert_usage_error(argv, code, text, opt.opts[0])


@pytest.mark.parametrize("path", [pytest.param(p, id=" ".join(p) or "cxraug") for p, _ in GROUPS])
def test_unknown_subcommand(path, capsys):
    argv = [*path, "bogus-command"]
    code, text = _run(argv, capsys)
    _assert_usage_error(argv, code, text, "bogus-command")


def test_unknown_train_component(capsys):
    code, text = _run(["train", "bogus"], capsys)
    _assert_usage_error(["train", "bogus"], code, text, "bogus", "classifier")


def test_installed_entry_point_is_the_same_boundary(tmp_path):
    """The console script path (python -m, as ``cxraug`` runs ``entry``): same exit and text."""
    proc = subprocess.run([sys.executable, "-m", "cxraug.cli.main", "synth", "--bogus"],
                          capture_output=True, text=True, cwd=tmp_path, check=False)
    _assert_usage_error(["synth", "--bogus"], proc.returncode, proc.stdout + proc.stderr, "--bogus")


# --------------------------------------------------------------- --out under a regular file

def _forbid(monkeypatch, target: str) -> None:
    """Fail the test if the command reaches ``target`` (``module:attribute``).

    A module not imported yet is replaced by a stub that fails on any use (the command's own
    import included), so the test never pays for importing torch or diffusers.
    """
    module, attr = target.split(":")

    def boom(*args, **kwargs):
        raise AssertionError(f"{target} was reached before --out was checked")

    if module not in sys.modules:
        stub = types.ModuleType(module)

        def attribute(name):
            if name.startswith("__"):
                raise AttributeError(name)
            boom()

        stub.__getattr__ = attribute
        monkeypatch.setitem(sys.modules, module, stub)
        return
    obj = sys.modules[module]
    *owners, last = attr.split(".")
    for o in owners:
        obj = getattr(obj, o)
    monkeypatch.setattr(obj, last, boom)


OUT_UNDER_FILE = {
    "synth": (["synth", "--labels", "pneumonia", "--n", "4"], "cxraug.cohorts.generate:synthesize"),
    "generate": (["generate", "--report", "clear lungs", "--n", "1"],
                 "cxraug.diffusion.pipeline:DiffCXRPipeline.from_pretrained"),
    "label": (["label", "REPORTS"], "cxraug.data.labeler:make_labeler"),
    "filter": (["filter"], "cxraug.diffusion.lnfs:filter_candidates"),
    "bench": (["bench", "--arms", "real"], "cxraug.experiments.bench:run_bench"),
    "eval": (["eval", "--real", "sample:kermany", "--synth", "SYNTH", "--extractor", "pixels"],
             "cxraug.experiments.quality.card:evaluate"),
    "export": (["export", "RUN"], "cxraug.diffusion.export:export_model"),
    "train classifier": (["train", "classifier"], "cxraug.classify.dataset:train_on_dataset"),
    "train": (["train", "vae"], "cxraug.diffusion.config:DiffCXRConfig"),
    "quickstart": (["quickstart"], "cxraug.diffusion.pipeline:DiffCXRPipeline.from_pretrained"),
}


@pytest.mark.parametrize("name", list(OUT_UNDER_FILE))
def test_out_under_a_regular_file_fails_before_work(name, tmp_path, monkeypatch, capsys):
    argv, work = OUT_UNDER_FILE[name]
    _forbid(monkeypatch, work)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "a.txt").write_text("FINDINGS: clear lungs.")
    (tmp_path / "afile.txt").write_text("not a folder")
    bad = tmp_path / "afile.txt" / "sub"
    argv = [{"REPORTS": str(tmp_path / "reports"), "SYNTH": str(tmp_path / "reports"),
             "RUN": str(tmp_path)}.get(a, a) for a in argv]
    code = main([*argv, "--out", str(bad)])
    out, err = capsys.readouterr()
    assert code != 0
    lines = [ln for ln in (out + err).splitlines() if ln.strip()]
    assert len(lines) == 1 and str(bad) in lines[0] and "is a file" in lines[0], out + err
    assert "Traceback" not in out + err


def test_writable_out_helper(tmp_path):
    from cxraug.cli.common import writable_out
    from cxraug.core.errors import CxraugError

    f = tmp_path / "afile.txt"
    f.write_text("x")
    assert writable_out(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert writable_out(f, folder=False) == f  # an existing output file is overwritten, not refused
    for path, folder in ((f / "sub", True), (f / "a" / "b.json", False), (f, True), (tmp_path, False)):
        with pytest.raises(CxraugError, match=str(path)):
            writable_out(path, "--out", folder)
    assert not Path(f / "sub").exists()


# ------------------------------------------- numbers: checked before any work, naming the option

VAE = Path(__file__).resolve().parents[2] / "cxraug" / "assets" / "models" / "kermany-128" / "vae"

#: A valid command line per command (placeholders filled in per test) and the work it must not
#: reach with a bad number. bench is checked in its own tests.
VALID = {
    "data info": ([], "cxraug.data.adapters:load_dataset"),
    "eval": (["--real", "sample:kermany", "--synth", "SYNTH", "--extractor", "pixels", "--out",
              "OUT/e.json"], "cxraug.experiments.quality.card:evaluate"),
    "export": (["RUN", "--out", "OUT/m"], "cxraug.diffusion.export:export_model"),
    "filter": (["--vae", str(VAE), "--out", "OUT/f"], "cxraug.diffusion.lnfs:filter_candidates"),
    "generate": (["--labels", "pneumonia", "--out", "OUT/g"],
                 "cxraug.diffusion.pipeline:DiffCXRPipeline.from_pretrained"),
    "label": (["REPORTS", "--out", "OUT/l.csv"], "cxraug.data.labeler:make_labeler"),
    "label-templates": (["REPORTS", "--out", "OUT/t.json"], "cxraug.data.templates:mine_templates"),
    "quickstart": (["--out", "OUT/q"], "cxraug.diffusion.pipeline:DiffCXRPipeline.from_pretrained"),
    "synth": (["--labels", "pneumonia", "--n", "4", "--out", "OUT/c"],
              "cxraug.cohorts.generator:LoadedGenerator.open"),
    "train": (["classifier", "--out", "OUT/r"], "cxraug.classify.dataset:train_on_dataset"),
}
#: Options where a huge value is a size no plan or memory can hold.
SIZES = {"--n", "--n-synth", "--image-size", "--stats-size", "--steps", "--reference-size"}


def _bad_values(opt) -> list[str]:
    values = ["-3"]
    if _kind(opt) is float:
        values += ["nan", "inf", "-inf"]
    if opt.opts[0] in SIZES:
        values.append("1000000000000")
    return values


BAD_NUMBERS = [pytest.param(" ".join(p), o.opts[0], v, id=f"{' '.join(p)} {o.opts[0]} {v}")
               for p, c, o in (x.values for x in NUMERIC) if " ".join(p) in VALID
               for v in _bad_values(o)]


def test_every_command_with_numbers_is_covered():
    assert {" ".join(p) for p, _, _ in (x.values for x in NUMERIC)} - set(VALID) == {"bench"}


@pytest.mark.parametrize("name,opt,value", BAD_NUMBERS)
def test_bad_numbers_are_refused_before_work(name, opt, value, tmp_path, monkeypatch, capsys):
    """Negative, non-finite and (for sizes) huge values: exit 2, an error naming the option as
    typed, nothing done and nothing written."""
    argv, work = VALID[name]
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "a.txt").write_text("FINDINGS: clear lungs.")
    (tmp_path / "synth").mkdir()
    fill = {"SYNTH": str(tmp_path / "synth"), "REPORTS": str(tmp_path / "reports"),
            "RUN": str(tmp_path / "reports")}
    argv = [fill.get(a, a.replace("OUT", str(tmp_path / "out"))) for a in argv]
    importlib.import_module(work.split(":")[0])  # the real module: the checks may import it
    _forbid(monkeypatch, work)
    monkeypatch.chdir(tmp_path)
    code = main([*name.split(), *argv, opt, value])
    out, err = capsys.readouterr()
    assert code == 2, f"{name} {opt} {value}: exit {code}\n{out}{err}"
    error = [ln for ln in (out + err).splitlines() if ln.lower().startswith("error")]
    assert len(error) == 1 and opt in error[0], f"{name} {opt} {value}:\n{out}{err}"
    assert "Traceback" not in out + err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv,named", [
    (["synth", "--labels", "pneumonia", "--n", "1000000000000", "--dry-run"], "--n 1000000000000"),
    (["synth", "--labels", "pneumonia", "--n", "4", "--seed", "-1", "--dry-run"], "--seed -1"),
    (["synth", "--labels", "pneumonia", "--n", "4", "--until-accepted", "--set",
      "max_attempts=nan"], "max_attempts: must be a finite number"),
    (["synth", "--labels", "pneumonia", "--n", "600000", "--until-accepted"], "max_attempts 3.0"),
    (["generate", "--labels", "pneumonia", "--n", "1000000000000"], "--n 1000000000000"),
    (["generate", "--report", "a", "--report", "b", "--n", "600000"], "--n 600000 x 2 reports"),
    (["eval", "--real", "sample:kermany", "--synth", "/nonexistent"], "--synth /nonexistent"),
])
def test_issue_cases_are_one_line_before_work(argv, named, tmp_path, monkeypatch, capsys):
    """The cases of issue #26: the kernel's OOM killer, a wrong option named, or a dry run that
    passed what the real run refuses."""
    importlib.import_module("cxraug.cohorts.generator")
    importlib.import_module("cxraug.diffusion.pipeline")
    _forbid(monkeypatch, "cxraug.cohorts.generator:LoadedGenerator.open")
    _forbid(monkeypatch, "cxraug.diffusion.pipeline:DiffCXRPipeline.from_pretrained")
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    out, err = capsys.readouterr()
    lines = [ln for ln in (out + err).splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {named}"), out + err
    assert list(tmp_path.iterdir()) == []


def test_synth_dry_run_checks_out_like_the_real_run(tmp_path, capsys):
    (tmp_path / "afile.txt").write_text("x")
    bad = tmp_path / "afile.txt" / "sub"
    code = main(["synth", "--labels", "pneumonia", "--n", "4", "--dry-run", "--out", str(bad)])
    assert code == 2 and "is a file" in capsys.readouterr().err
