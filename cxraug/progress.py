"""One look for cxraug's long-job progress bars (VAE, text, U-ViT, classifier, synth).

    with job_progress("stage 1", "loss {task.fields[loss]}", enabled=verbose) as bar:
        task = bar.add_task("train", total=steps, completed=start, loss="-")

The columns: the job name, a bar, done/total, an optional ``info`` line formatted from the task's
fields, elapsed and remaining time. ``enabled=False`` draws nothing (tests, non-main processes).
"""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def job_progress(name: str, info: str = "", *, enabled: bool = True, transient: bool = False,
                 console=None) -> Progress:
    """A ``rich`` Progress for a job called ``name``; ``info`` is a format string over task fields
    (every task added to it must then carry those fields)."""
    columns = [TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn()]
    if info:
        columns.append(TextColumn(info))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, disable=not enabled, transient=transient, console=console)
