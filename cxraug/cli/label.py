"""``cxraug label`` (reports -> CheXpert label CSV) and ``cxraug label-templates``."""

from __future__ import annotations

from pathlib import Path

import typer

from cxraug.cli.common import console, writable_out
from cxraug.core.errors import CxraugError, writing

InputArg = typer.Argument(None, help="Folder of .txt reports or a CSV with one report per row.")
IUOpt = typer.Option(False, "--iu", help="The IU-Xray reports inside torchxrayvision.")
TextColOpt = typer.Option("report", "--text-column", help="CSV column holding the report text.")
IdColOpt = typer.Option(None, "--id-column",
                        help="CSV id column (default: 'id' if present, else the row number).")
OutCsvOpt = typer.Option(..., "--out", "-o", help="Label CSV to write.")
OutJsonOpt = typer.Option(..., "--out", "-o", help="Template JSON to write.")
LabelerOpt = typer.Option("rule", "--labeler", help="rule (embedded) or chexbert.")
WeightsOpt = typer.Option(None, "--weights", help="CheXbert weights: chexbert.pth or a folder.")
TokenizerOpt = typer.Option(None, "--tokenizer",
                            help="Folder with bert-base-uncased's vocab.txt (CheXbert).")
BatchOpt = typer.Option(16, "--batch-size", min=1)
TopKOpt = typer.Option(20, "--top-k", min=1, help="Phrasings kept per observation.")
MinCountOpt = typer.Option(1, "--min-count", min=1, help="Keep phrasings seen at least this often.")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace an existing output file.")


def _read(inputs: Path | None, iu: bool, text_column: str, id_column: str | None):
    from cxraug.data.reports import read_reports

    if iu == (inputs is not None):
        raise CxraugError("give either a reports folder / CSV or --iu (exactly one)")
    if iu:
        from cxraug.data.iu import read_iu_reports

        reports = read_iu_reports(clean=False)
        return ([r.report_id for r in reports],
                [f"FINDINGS: {r.findings} IMPRESSION: {r.impression}" for r in reports])
    return read_reports(inputs, text_column, id_column)


def _check_out(out: Path, overwrite: bool) -> None:
    writable_out(out, folder=False)
    if out.exists() and not overwrite:
        raise CxraugError(f"{out}: exists; pass --overwrite or another --out")


def label(inputs: Path | None = InputArg, out: Path = OutCsvOpt, iu: bool = IUOpt,
          text_column: str = TextColOpt, id_column: str | None = IdColOpt,
          labeler: str = LabelerOpt, weights: Path | None = WeightsOpt,
          tokenizer: Path | None = TokenizerOpt, batch_size: int = BatchOpt,
          overwrite: bool = OverwriteOpt) -> None:
    """Label reports with the 14 CheXpert observations (1 / 0 / -1 / blank) into a CSV."""
    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from cxraug.data import labels as L
    from cxraug.data.labeler import make_labeler, text_problem, write_labels_csv

    _check_out(out, overwrite)
    ids, texts = _read(inputs, iu, text_column, id_column)
    model = make_labeler(labeler, weights, tokenizer, batch_size)
    rows = []
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task(f"labelling ({labeler})", total=len(texts))
        for s in range(0, len(texts), 64):
            rows.append(model.label(texts[s:s + 64]))
            bar.advance(task, len(texts[s:s + 64]))
    labels = np.concatenate(rows)
    with writing(out):
        write_labels_csv(out, ids, labels, "report_id" if iu else "id")
    pos = {o: int((labels[:, i] == L.POSITIVE).sum()) for i, o in enumerate(L.OBSERVATIONS)}
    console.print(f"wrote {out}: {len(ids)} reports; positives: "
                  + ", ".join(f"{o} {n}" for o, n in pos.items() if n))
    problems = {i: why for i, t in zip(ids, texts) if (why := text_problem(t)) is not None}
    if problems:
        empty = sum(why == "empty" for why in problems.values())
        first = ", ".join(str(i) for i in list(problems)[:5])
        console.print(f"[yellow]left blank[/] (unlabelled, not No Finding): {len(problems)} "
                      f"report(s), {empty} empty and {len(problems) - empty} not report text; "
                      f"first: {first}", highlight=False)


def label_templates(inputs: Path | None = InputArg, out: Path = OutJsonOpt, iu: bool = IUOpt,
                    text_column: str = TextColOpt, top_k: int = TopKOpt,
                    min_count: int = MinCountOpt, overwrite: bool = OverwriteOpt) -> None:
    """Mine report sentences per observation into a template bank for prompts (PromptBuilder)."""
    from cxraug.data.templates import build_iu_templates, mine_templates

    _check_out(out, overwrite)
    if iu and inputs is None:
        bank = build_iu_templates(out, top_k=top_k, min_count=min_count)
    else:
        _, texts = _read(inputs, iu, text_column, None)
        bank = mine_templates(texts, top_k=top_k, min_count=min_count)
        bank.save(out)
    console.print(f"wrote {out}: positive phrasings for {len(bank.positive)} observations, "
                  f"negative for {len(bank.negative)}, {len(bank.normal)} normal")


def register(app: typer.Typer) -> None:
    app.command("label")(label)
    app.command("label-templates")(label_templates)
