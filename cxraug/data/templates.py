"""Label vector -> report-like text: Diff-CXR's fixed templates and templates mined from reports.

Two sources of text for a target raw label vector (``float32[14]``, CheXbert order):

* ``paper`` - Diff-CXR's disease-knowledge templates: one sentence per positive disease among
  :data:`cxraug.data.labels.DKIM_DISEASES`, "There is atelectasis.", joined in label order;
  "There is no finding." when none is positive (:func:`paper_hint`).
* ``mined`` - real phrasings. :func:`mine_templates` labels every sentence of a report corpus
  with the rule labeler and keeps (a) sentences positive for exactly one observation, (b)
  sentences negative for exactly one observation and positive/uncertain for none, (c) "normal"
  sentences from reports with No Finding and no device, with no positive or uncertain mention.
  Sentences with de-identification placeholders, digits (dates, sizes) or comparisons with a
  previous study are dropped; the rest are de-duplicated (case/space/punctuation-insensitive)
  and the ``top_k`` most frequent phrasings are kept with their counts. Each kept sentence
  records the observations it negates, so a prompt never contradicts its own target.

:class:`PromptBuilder` turns a target vector into text deterministically from a seed. Its
default bank is mined from the IU-Xray reports that torchxrayvision installs, on first use, into
the cxraug cache (:func:`default_templates_path`). The bank is not shipped: the reports are
CC BY-NC-ND 4.0 (see ``assets/templates/NOTICE.md``); ``cxraug label-templates --iu`` builds
the same file on demand.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from cxraug.core.errors import DataError
from cxraug.data import labels as L
from cxraug.data.cache import default_cache_dir
from cxraug.data.iu import IU_CITATION, IU_LICENSE, read_iu_reports
from cxraug.data.labeler import RuleLabeler
from cxraug.data.reports import (
    LABEL_SECTIONS,
    NON_FINDING_SECTIONS,
    clean_text,
    has_placeholder,
    split_sections,
    split_sentences,
)

PAPER_SENTENCE = "There is {}."
PAPER_NO_FINDING = "There is no finding."
SHIPPED_TEMPLATES = "iu_mined.json"

# Sentences about change over time or the examination itself make no sense for a synthetic image.
_TEMPORAL = re.compile(
    r"\b(?:compar\w*|prior|previous\w*|interval\w*|since|again|unchanged|redemonstrat\w*|"
    r"improv\w*|wors\w*|increas\w*|decreas\w*|chang\w*|persist\w*|resolv\w*|new|now|"
    r"remain\w*|today|recent\w*|ct|study|exam\w*|patient|history|known|clinical\w*|"
    r"recommend\w*|correlat\w*|follow\w*|evaluat\w*|limited|technique|portable|before|"
    r"views?|films?|projections?)\b",
    re.IGNORECASE)


def paper_hint(labels: np.ndarray) -> str:
    """Diff-CXR's template text for a raw label vector: positives among the 11 DKIM diseases."""
    v = L.check_raw(labels, "labels")
    names = [d for d in L.DKIM_DISEASES if v[L.OBSERVATIONS.index(d)] == L.POSITIVE]
    if not names:
        return PAPER_NO_FINDING
    return " ".join(PAPER_SENTENCE.format(d.lower()) for d in names)


def _norm(sentence: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s/-]", " ", sentence.lower())).strip()


def _tidy(sentence: str) -> str:
    """Whitespace, repeated punctuation and the first letter's case; the words stay as written."""
    s = re.sub(r"([.,;:])\1+", r"\1", clean_text(sentence))
    return s[:1].upper() + s[1:]


def _keep(sentence: str) -> bool:
    words = sentence.split()
    return (2 <= len(words) <= 20 and not re.search(r"\d", sentence)
            and not _TEMPORAL.search(sentence) and sentence[:1].isalpha())


@dataclass
class TemplateBank:
    """Mined sentences. Each entry: ``{"text", "count", "negates": [observation, ...]}``, most
    frequent first. ``positive``/``negative`` are keyed by observation."""

    positive: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    negative: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    normal: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"meta": self.meta, "positive": self.positive, "negative": self.negative,
                "normal": self.normal}

    def save(self, path: str | Path) -> Path:
        """Write JSON with one template per line (easy to read and to diff)."""
        def block(entries: list[dict[str, Any]], pad: str) -> str:
            rows = [pad + json.dumps(e, ensure_ascii=False) for e in entries]
            return "[\n" + ",\n".join(rows) + "\n" + pad[:-1] + "]"

        def group(d: dict[str, list[dict[str, Any]]]) -> str:
            items = [f'  {json.dumps(k)}: {block(v, "   ")}' for k, v in sorted(d.items())]
            return "{\n" + ",\n".join(items) + "\n }"

        text = (f'{{\n "meta": {json.dumps(self.meta, ensure_ascii=False)},\n'
                f' "positive": {group(self.positive)},\n "negative": {group(self.negative)},\n'
                f' "normal": {block(self.normal, "  ")}\n}}\n')
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    @classmethod
    def from_json(cls, obj: dict[str, Any], where: str = "templates") -> TemplateBank:
        try:
            bank = cls(positive=dict(obj["positive"]), negative=dict(obj["negative"]),
                       normal=list(obj["normal"]), meta=dict(obj.get("meta", {})))
        except (KeyError, TypeError):
            raise DataError(f"{where}: not a template bank (needs positive, negative and normal "
                            "keys; build one with `cxraug label-templates`)") from None
        for name in (*bank.positive, *bank.negative):
            L.canonical(name)  # unknown observation names fail here, naming the label
        return bank

    @classmethod
    def load(cls, path: str | Path | None = None) -> TemplateBank:
        """Read a bank; default: the IU-mined bank (see :func:`default_templates_path`)."""
        path = default_templates_path() if path is None else Path(path)
        if not path.is_file():
            raise DataError(f"{path}: template file not found; build one with "
                            "`cxraug label-templates --iu --out PATH`")
        try:
            return cls.from_json(json.loads(path.read_text()), str(path))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e})") from None


def default_templates_path() -> Path:
    """The default mined bank, built once per machine from the IU reports that torchxrayvision
    installs, into ``$CXRAUG_CACHE/templates/`` (same content every time: mining is
    deterministic). It is built rather than shipped because the IU reports are CC BY-NC-ND 4.0:
    cxraug does not redistribute sentences from them. A bank placed at
    ``cxraug/assets/templates/iu_mined.json`` (e.g. by a packager who may) is used first."""

    packaged = Path(str(resources.files("cxraug") / "assets" / "templates" / SHIPPED_TEMPLATES))
    if packaged.is_file():
        return packaged
    cached = default_cache_dir() / "templates" / SHIPPED_TEMPLATES
    if not cached.is_file():
        tmp = cached.with_name(cached.name + f".{os.getpid()}.tmp")
        build_iu_templates(tmp)
        tmp.replace(cached)
    return cached


def mine_templates(reports: Iterable[str], top_k: int = 20, min_count: int = 1,
                   labeler: RuleLabeler | None = None, meta: dict[str, Any] | None = None
                   ) -> TemplateBank:
    """Mine a :class:`TemplateBank` from raw report texts (placeholders still in, see module doc).

    ``top_k`` phrasings are kept per observation (and for normal sentences), each seen at least
    ``min_count`` times.
    """
    labeler = labeler or RuleLabeler()
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)  # (kind, obs) -> norm -> n
    first: dict[str, str] = {}  # normalised -> first original phrasing
    negates: dict[str, list[str]] = {}
    n_reports = 0
    sd = L.OBSERVATIONS.index("Support Devices")
    for text in reports:
        n_reports += 1
        sections = split_sections(text, clean=False)
        parts = [sections[s] for s in LABEL_SECTIONS if sections.get(s)] or [
            v for k, v in sections.items() if k not in NON_FINDING_SECTIONS]
        sentences = [_tidy(s) for s in split_sentences(" ".join(parts)) if not has_placeholder(s)]
        labelled = [(s, labeler.sentence_labels(s)) for s in sentences]
        report = labeler.label_text(clean_text(" ".join(parts)))
        normal_report = report[-1] == L.POSITIVE and report[sd] != L.POSITIVE
        for s, v in labelled:
            if not _keep(s):
                continue
            v = v[:-1]  # No Finding is never stated by a sentence
            pos = np.flatnonzero(v == L.POSITIVE)
            neg = np.flatnonzero(v == L.NEGATIVE)
            unc = np.flatnonzero(v == L.UNCERTAIN)
            key = _norm(s)
            if len(unc):
                continue
            if len(pos) == 1:
                counts[("positive", L.OBSERVATIONS[pos[0]])][key] += 1
            elif not len(pos) and len(neg) == 1:
                counts[("negative", L.OBSERVATIONS[neg[0]])][key] += 1
            if not len(pos) and normal_report:
                counts[("normal", "")][key] += 1
            first.setdefault(key, s)
            negates[key] = [L.OBSERVATIONS[i] for i in neg]

    def top(c: Counter) -> list[dict[str, Any]]:
        kept = [(k, n) for k, n in c.most_common() if n >= min_count][:top_k]
        return [{"text": first[k], "count": n, "negates": negates[k]} for k, n in kept]

    bank = TemplateBank(meta={"n_reports": n_reports, "top_k": top_k, "min_count": min_count,
                              "labeler": labeler.name, **(meta or {})})
    for (kind, obs), c in sorted(counts.items()):
        if kind == "normal":
            bank.normal = top(c)
        elif top(c):
            getattr(bank, kind)[obs] = top(c)
    return bank


def build_iu_templates(out: str | Path, iu_path: str | Path | None = None, top_k: int = 20,
                       min_count: int = 1) -> TemplateBank:
    """Mine the IU-Xray reports (from torchxrayvision) and write the bank to ``out``."""

    reports = read_iu_reports(iu_path, clean=False)
    texts = [f"FINDINGS: {r.findings} IMPRESSION: {r.impression}" for r in reports]
    bank = mine_templates(texts, top_k=top_k, min_count=min_count, meta={
        "source": "IU-Xray / Open-i chest X-ray reports (NLMCXR_reports.tgz in torchxrayvision)",
        "license": IU_LICENSE, "citation": IU_CITATION,
        "note": "short verbatim report sentences (whitespace, repeated punctuation and the first "
                "letter's case tidied); built by cxraug.data.templates.build_iu_templates"})
    bank.save(out)
    return bank


class PromptBuilder:
    """Target raw label vector -> report-like text, deterministic given ``seed``.

    ``source="paper"``: :func:`paper_hint` (the seed is not used). ``source="mined"``: one mined
    positive sentence per positive observation in label order (sampled in proportion to its
    count; Diff-CXR's sentence when nothing was mined for it), then up to ``n_negatives``
    explicit-negative sentences for observations the target marks negative (0); a target with
    no positive observation gets ``n_normal`` normal-report sentences. Sentences that negate an
    observation the target has positive or uncertain are never used. Uncertain (-1) and blank
    observations are not mentioned.
    """

    def __init__(self, source: str = "mined", templates_path: str | Path | None = None,
                 n_negatives: int = 2, n_normal: int = 2) -> None:
        if source not in ("mined", "paper"):
            raise DataError(f"prompt source {source!r} is unknown; use 'mined' or 'paper'")
        self.source = source
        self.bank = TemplateBank.load(templates_path) if source == "mined" else None
        self.n_negatives, self.n_normal = n_negatives, n_normal

    def build(self, labels: np.ndarray, seed: int) -> str:
        v = L.check_raw(labels, "labels")
        if self.source == "paper":
            return paper_hint(v)
        rng = np.random.default_rng([int(seed), 0x7E3])
        bank = self.bank
        assert bank is not None
        present = {o for o, x in zip(L.OBSERVATIONS, v) if x in (L.POSITIVE, L.UNCERTAIN)}
        ok = [e for e in bank.normal if not present & set(e["negates"])]
        positives = [o for o in L.positives(v) if o != "No Finding"]
        out: list[str] = []
        for obs in positives:
            choices = [e for e in bank.positive.get(obs, []) if not present & set(e["negates"])]
            out.append(_pick(choices, rng) if choices else PAPER_SENTENCE.format(obs.lower()))
        if not positives:
            out += _pick_many(ok, self.n_normal, rng) or [PAPER_NO_FINDING]
        negated = [o for o, x in zip(L.OBSERVATIONS[:-1], v[:-1]) if x == L.NEGATIVE]
        if negated and self.n_negatives:
            order = rng.permutation(len(negated))[: self.n_negatives]
            for i in sorted(order):
                choices = [e for e in bank.negative.get(negated[i], [])
                           if not present & set(e["negates"])]
                if choices:
                    out.append(_pick(choices, rng))
        return " ".join(dict.fromkeys(out))  # no sentence twice

    def build_many(self, labels: np.ndarray, seeds: Sequence[int]) -> list[str]:
        """:meth:`build` per row of ``labels [N, 14]`` with its own seed."""
        return [self.build(row, s) for row, s in zip(np.asarray(labels), seeds)]


def _pick(entries: list[dict[str, Any]], rng: np.random.Generator) -> str:
    w = np.array([e["count"] for e in entries], dtype=np.float64)
    return entries[int(rng.choice(len(entries), p=w / w.sum()))]["text"]


def _pick_many(entries: list[dict[str, Any]], k: int, rng: np.random.Generator) -> list[str]:
    if not entries or k <= 0:
        return []
    w = np.array([e["count"] for e in entries], dtype=np.float64)
    idx = rng.choice(len(entries), size=min(k, len(entries)), replace=False, p=w / w.sum())
    return [entries[int(i)]["text"] for i in sorted(idx)]
