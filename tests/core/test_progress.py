"""Long jobs stay readable in a log file: plain progress lines when the output is no terminal."""

import io

from rich.console import Console

from cxraug.core.progress import job_progress


def test_log_file_gets_plain_progress_lines():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=60)
    with job_progress("stage 1", "loss {task.fields[loss]}", console=console, log_every=0) as bar:
        task = bar.add_task("train", total=3, loss="-")
        for i in range(3):
            bar.update(task, advance=1, loss=f"{0.5 - i / 10:.2f}")
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    assert lines[-1].startswith("stage 1 train 3/3 loss 0.30")
    assert all("\x1b[" not in ln for ln in lines)  # no terminal control codes in the log
    assert len(lines) == 2  # the first update starts the clock; then one line per update


def test_terminal_and_disabled_bars_print_no_log_lines():
    buf = io.StringIO()
    with job_progress("x", enabled=False, console=Console(file=buf), log_every=0) as bar:
        t = bar.add_task("t", total=2)
        bar.update(t, advance=2)
    assert buf.getvalue() == ""
