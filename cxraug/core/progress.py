"""One look for cxraug's long-job progress bars (VAE, text, U-ViT, classifier, synth).

    with job_progress("stage 1", "loss {task.fields[loss]}", enabled=verbose) as bar:
        task = bar.add_task("train", total=steps, completed=start, loss="-")

The columns: the job name, a bar, done/total, an optional ``info`` line formatted from the task's
fields, elapsed and remaining time. ``enabled=False`` draws nothing (tests, non-main processes).
When the output is not a terminal (``cxraug train ... > train.log``), a live bar cannot be drawn;
then one plain line per task is printed every ``log_every`` seconds and when the task finishes::

    stage 1 train 1250/6000 loss 0.1032 2.1 it/s elapsed 0:09:55 left 0:37:41
"""

from __future__ import annotations

import time

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cxraug.core.errors import writing


class _LogProgress(Progress):
    """A Progress that also writes plain, timed lines when its console is not a terminal."""

    def __init__(self, *columns, name: str, info: str, log_every: float, **kwargs):
        super().__init__(*columns, **kwargs)
        self._name, self._info, self._every = name, info, log_every
        self._logging = not self.disable and not self.console.is_terminal
        self._last: dict = {}

    def _line(self, task_id) -> str:
        from datetime import timedelta

        from rich.text import Text

        t = self._tasks[task_id]
        total = "?" if t.total is None else f"{t.total:g}"
        parts = [self._name, t.description if t.description != self._name else "",
                 f"{t.completed:g}/{total}"]
        if self._info:
            try:
                parts.append(Text.from_markup(self._info.format(task=t)).plain)
            except (KeyError, AttributeError, IndexError, ValueError):
                pass
        if t.speed:
            parts.append(f"{t.speed:.2f}/s")
        parts.append(f"elapsed {timedelta(seconds=int(t.elapsed or 0))}")
        if t.time_remaining is not None:
            parts.append(f"left {timedelta(seconds=int(t.time_remaining))}")
        return " ".join(p for p in parts if p)

    def update(self, task_id, **kwargs) -> None:
        super().update(task_id, **kwargs)
        if not self._logging:
            return
        t, now = self._tasks[task_id], time.monotonic()
        finished = t.total is not None and t.completed >= t.total
        last = self._last.get(task_id)
        if last is None:  # the first update only starts the clock
            self._last[task_id] = now
        elif (finished and last != -1) or (not finished and now - last >= self._every):
            self.console.print(self._line(task_id), markup=False, highlight=False, soft_wrap=True)
            self._last[task_id] = -1 if finished else now

    def advance(self, task_id, advance: float = 1) -> None:
        self.update(task_id, advance=advance)


def job_progress(name: str, info: str = "", *, enabled: bool = True, transient: bool = False,
                 console=None, log_every: float = 30.0) -> Progress:
    """A ``rich`` Progress for a job called ``name``; ``info`` is a format string over task fields
    (every task added to it must then carry those fields). ``log_every``: seconds between plain
    progress lines when the output is not a terminal."""
    columns = [TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn()]
    if info:
        columns.append(TextColumn(info))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    bar = _LogProgress(*columns, name=name, info=info, log_every=log_every, disable=not enabled,
                       transient=transient, console=console)
    if bar._logging:
        bar.live.transient = True  # the plain lines are the record; no final bar dump
    return bar


class MetricsLog:
    """The one training-log format of cxraug: JSON lines, one record per logged step.

        log = MetricsLog(run / "metrics.jsonl")
        log.resume(start_step)               # drop records past the step training resumes from
        log.write(step, loss=0.1032, lr=4e-4)

    Every record is ``{"step": int, <name>: value, ...}``, appended and flushed at once so
    ``tail -f`` (or a crashed job's folder) shows the curve so far. ``enabled=False`` (a
    non-main process) writes nothing. Read back with :func:`read_metrics`.
    """

    def __init__(self, path, enabled: bool = True):
        from pathlib import Path

        self.path, self.enabled = Path(path), enabled

    def resume(self, step: int) -> None:
        """Keep only the records up to ``step`` (a resumed job rewrites what came after)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with writing(self.path):
            tmp.write_text("".join(_json_line(r) for r in kept))
        tmp.replace(self.path)

    def write(self, step: int, **values) -> dict:
        rec = {"step": int(step), **values}
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with writing(self.path), self.path.open("a") as f:
                f.write(_json_line(rec))
        return rec


def _json_line(rec: dict) -> str:
    import json

    return json.dumps(rec) + "\n"


def read_metrics(path) -> list[dict]:
    """The records of a :class:`MetricsLog` file (a torn last line from a killed job is skipped)."""
    import json
    from pathlib import Path

    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
