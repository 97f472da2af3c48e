"""Free-text radiology reports: cleaning, section splitting and sentence splitting.

Everything that turns report text into model input goes through :func:`clean_text` first, so
de-identification placeholders never reach a text encoder or a labeler:

* IU-Xray / Open-i writes redacted words as ``XXXX`` (``"Normal chest x-XXXX."``);
* MIMIC-CXR writes them as ``___``.

Sections are found by their headers (``FINDINGS:``, ``IMPRESSION:``, ``INDICATION:`` ...) and
returned under canonical lower-case names (see :data:`SECTION_ALIASES`). Text before the first
header is kept under ``"preamble"``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from cxraug.core.errors import DataError

# ----------------------------------------------------------------------------- cleaning

#: De-identification placeholders: ``XXXX`` / ``xxxx`` (3+ x's not part of a word) and ``___``.
PLACEHOLDER_RE = re.compile(r"(?<![A-Za-z])[Xx]{3,}(?![A-Za-z])|_{2,}")


def has_placeholder(text: str) -> bool:
    """Whether ``text`` contains a de-identification placeholder."""
    return bool(PLACEHOLDER_RE.search(text))


def remove_placeholders(text: str) -> str:
    """Delete placeholders and tidy the gap they leave (``"no XXXX of a"`` -> ``"no of a"``)."""
    text = PLACEHOLDER_RE.sub(" ", text)
    text = re.sub(r"(?<=\w)-\s+(?=[.,;:]|$)", "", text)  # "x-XXXX." -> "x." not "x- ."
    return text


def normalize_whitespace(text: str) -> str:
    """Collapse runs of whitespace (newlines included) to one space; no space before , . ; :"""
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([,.;:?!])", r"\1", text)


def clean_text(text: str | None) -> str:
    """Placeholders removed, whitespace normalised; ``None`` -> ``""``. Idempotent."""
    if not text:
        return ""
    return normalize_whitespace(remove_placeholders(str(text)))


# ----------------------------------------------------------------------------- sections

#: Header spelling (lower case) -> canonical section name.
SECTION_ALIASES: dict[str, str] = {
    "findings": "findings", "finding": "findings",
    "impression": "impression", "impressions": "impression", "conclusion": "impression",
    "conclusions": "impression", "summary": "impression",
    "indication": "indication", "indications": "indication", "reason for exam": "indication",
    "reason for examination": "indication", "reason for study": "indication",
    "clinical indication": "indication",
    "history": "history", "clinical history": "history", "clinical information": "history",
    "comparison": "comparison", "comparisons": "comparison", "prior": "comparison",
    "technique": "technique", "examination": "examination", "exam": "examination",
    "recommendation": "recommendation", "recommendations": "recommendation",
    "notification": "notification",
}

# A header is one of the aliases followed by a colon, at the start of the text or a line, or
# after a sentence end; upper-case headers (MIMIC's "FINDINGS:") are accepted anywhere.
_NAMES = "|".join(sorted((re.escape(a) for a in SECTION_ALIASES), key=len, reverse=True))
_HEADER_RE = re.compile(
    rf"(?:(?:^|(?<=[\n.]))[ \t]*(?P<a>(?i:{_NAMES}))|(?P<b>\b(?:{_NAMES.upper()})))[ \t]*:")

#: Sections a labeler reads, in order. CheXpert labelled impressions only; IU-Xray findings hold
#: many observations the impression does not repeat ("Normal chest."), so cxraug reads both.
LABEL_SECTIONS: tuple[str, ...] = ("findings", "impression")

#: Sections never labelled: they describe why the exam was done, not what it shows.
NON_FINDING_SECTIONS: tuple[str, ...] = ("indication", "history", "comparison", "technique",
                                         "examination", "notification")


def split_sections(text: str | None, clean: bool = True) -> dict[str, str]:
    """Split a report into ``{canonical section name: text}``, in order of appearance.

    Repeated sections are joined with a space. Text before the first header goes under
    ``"preamble"`` (omitted when empty). With ``clean`` each section is passed through
    :func:`clean_text`.
    """
    text = text or ""
    out: dict[str, str] = {}
    matches = list(_HEADER_RE.finditer(text))
    spans = [("preamble", 0, matches[0].start() if matches else len(text))]
    for m, nxt in zip(matches, matches[1:] + [None]):
        name = SECTION_ALIASES[(m.group("a") or m.group("b")).lower()]
        spans.append((name, m.end(), nxt.start() if nxt else len(text)))
    for name, a, b in spans:
        part = clean_text(text[a:b]) if clean else text[a:b].strip()
        if part:
            out[name] = f"{out[name]} {part}" if name in out else part
    return out


def labeling_text(sections: Mapping[str, str] | str) -> str:
    """The text a labeler should read: findings + impression, else everything but history.

    Accepts a section dict (from :func:`split_sections` or a dataset) or a raw report string.
    Reports without findings/impression headers (a plain sentence list) are read whole, minus
    indication/history/comparison/technique sections.
    """
    if isinstance(sections, str):
        sections = split_sections(sections)
    parts = [sections[s] for s in LABEL_SECTIONS if sections.get(s)]
    if not parts:
        parts = [v for k, v in sections.items() if k not in NON_FINDING_SECTIONS and v]
    return clean_text(" ".join(parts))


# ---------------------------------------------------------------------------- sentences

# Words after which a dot does not end a sentence.
_ABBREVIATIONS = re.compile(r"(?:vs|e\.g|i\.e|approx|dr|mr|mrs|ms)")


def split_sentences(text: str | None) -> list[str]:
    """Split cleaned report text into sentences, each keeping its final punctuation.

    Splits after ``.``, ``!`` or ``?`` followed by whitespace, and at newlines; not inside
    decimals or after list numbers (``"1."``) and a few abbreviations (``"vs."``, ``"e.g."``).
    Bare list numbers and empty pieces are dropped.
    """
    if not text:
        return []
    out: list[str] = []
    for line in re.split(r"\n+", str(text)):
        line = normalize_whitespace(line)
        start = 0
        for m in re.finditer(r"[.!?]+(?=\s|$)", line):
            before = line[start:m.start()]
            last = re.search(r"(\S+)$", before)
            word = last.group(1).lower() if last else ""
            if m.group(0) == "." and (re.fullmatch(r"\d+", word) and len(before.strip()) <= 3
                                      or _ABBREVIATIONS.fullmatch(word)):
                continue  # "1." list number or an abbreviation: not a sentence end
            piece = line[start:m.end()].strip()
            if piece:
                out.append(piece)
            start = m.end()
        tail = line[start:].strip()
        if tail:
            out.append(tail)
    # a leading list number ("2. No effusion.") is not part of the sentence
    out = [re.sub(r"^\d{1,2}[.)]\s+", "", s) for s in out]
    return [s for s in out if re.search(r"[A-Za-z]", s)]


# ------------------------------------------------------------------------------- corpora

def read_reports(path: str | Path, text_column: str = "report",
                 id_column: str | None = None) -> tuple[list[str], list[str]]:
    """Read a report corpus as ``(ids, raw texts)``.

    ``path`` is a folder of ``.txt`` files (searched recursively; id = the path relative to the
    folder, without ``.txt``) or a CSV (``.csv``/``.csv.gz``) with one report per row in
    ``text_column`` (id = ``id_column``, else an ``id`` column if there is one, else the row
    number). Raises :class:`DataError` naming the path for a missing path, an empty folder or a
    CSV without the column.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".txt")
        if not files:
            raise DataError(f"{path}: no .txt report files in this folder")
        ids = [p.relative_to(path).with_suffix("").as_posix() for p in files]
        return ids, [p.read_text(errors="replace") for p in files]
    if not path.is_file():
        raise DataError(f"{path}: not found; pass a folder of .txt reports or a CSV with a "
                        f"{text_column!r} column")
    if not re.search(r"\.csv(\.gz)?$", path.name, re.IGNORECASE):
        raise DataError(f"{path}: expected a folder of .txt reports or a .csv file")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    if text_column not in df.columns:
        raise DataError(f"{path}: no column {text_column!r} (found: {', '.join(df.columns[:12])});"
                        " pass --text-column NAME")
    if id_column is not None and id_column not in df.columns:
        raise DataError(f"{path}: no id column {id_column!r} (found: {', '.join(df.columns[:12])})")
    if df.empty:
        raise DataError(f"{path}: has no rows")
    id_column = id_column or ("id" if "id" in df.columns else None)
    ids = df[id_column].tolist() if id_column else [str(i) for i in range(len(df))]
    return ids, df[text_column].tolist()
