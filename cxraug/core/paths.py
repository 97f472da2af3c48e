"""Committed results hold no machine paths: every absolute path inside a result becomes relative
to the folder the result file is written to (where a reader of the repository finds it)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

_ABSOLUTE = re.compile(r"(?<![\w.])/(?:[\w.+-]+/)*[\w.+-]+")


def relative_paths(obj: Any, start: str | Path) -> Any:
    """``obj`` (nested dicts, lists, strings) with every absolute path in its strings, also inside
    longer text such as a command line, made relative to ``start``."""
    if isinstance(obj, dict):
        return {k: relative_paths(v, start) for k, v in obj.items()}
    if isinstance(obj, list):
        return [relative_paths(v, start) for v in obj]
    if isinstance(obj, str):
        base = str(Path(start).resolve())
        return _ABSOLUTE.sub(lambda m: os.path.relpath(m.group(0), base), obj)
    return obj
