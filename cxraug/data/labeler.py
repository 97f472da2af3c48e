"""A rule-based report labeler in the manner of the CheXpert labeler (Irvin et al. 2019).

Three stages, as in CheXpert, written from scratch with cxraug's own phrase lists (no parser:
regular expressions over cleaned, lower-cased sentences):

1. **Mention extraction.** Each observation has phrase patterns
   (:data:`cxraug.data.labeler_phrases.RULES`). Most are *findings* ("pleural effusion",
   "cardiomegaly"); some pair an anatomical subject with an attribute ("the heart is mildly
   enlarged", "widened mediastinum") and anchor on the attribute. *Normal* phrases ("heart size
   is normal", "the lungs are clear") are explicit negatives, *uncertain* phrases ("borderline
   heart size") explicit uncertains, and *ignore* phrases claim words that would otherwise be
   mis-read ("pericardial effusion", "calcified nodule" = a healed granuloma, "granulomatous
   infection", "fractured pacemaker lead").
2. **Classification** of every finding mention as positive, negative or uncertain from cue words
   in its clause. Scope is bounded: a cue never crosses a sentence end, ``;``/``:`` or a clause
   break ("but", "however", "which", "there is", ", the" ...), so in "no effusion. mild
   cardiomegaly." only the effusion is negated, while "no consolidation, effusion, or
   pneumothorax" negates all three. Uncertainty compounds ("cannot exclude", "not ruled out")
   are found first, pseudo-negations masked ("no change in"), then the nearest remaining cue
   before the mention decides ("no findings to suggest pneumonia" is a negation); without one,
   a cue right after it does ("pneumothorax is not seen", "pneumonia cannot be excluded",
   "effusion?"). A differential ("atelectasis or pneumonia", "X versus Y") is uncertain.
3. **Aggregation** per report and observation: positive beats uncertain beats negative beats
   not mentioned (NaN). No Finding is then derived with :func:`cxraug.data.labels.derive_no_finding`
   (positive iff nothing but Support Devices is positive or uncertain; never negative).

An empty report, and text that is not report text (too few known words: random bytes, another
language), is not labelled at all (every observation blank, No Finding too): see
:func:`~cxraug.data.labeler_vocab.text_problem`.

Text read: the findings and impression sections (:func:`cxraug.data.reports.labeling_text`).
CheXpert read impressions only, but IU-Xray findings carry many observations the impression
summarises away ("Normal chest"); the aggregation keeps a finding positive in either.

Conventions (CheXpert's where it has one): "likely X" is positive, "possible / probable / may
represent X" uncertain; vascular congestion and prominent vasculature count as Edema;
"calcified granuloma / nodule" is not a Lung Lesion and a "nodular opacity" is a Lung Opacity,
not a Lesion; scarring is not Lung Opacity; blunted costophrenic angles are not a Pleural
Effusion; an "enlarged cardiomediastinal silhouette" is Enlarged Cardiomediastinum, not
Cardiomegaly; "sternotomy" alone is not a device (its wires are).

Validation against human MeSH indexing of the 3,955 IU-Xray reports: ``benchmarks/label_iu.py``.
"""


from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxraug.core.errors import CxraugError
from cxraug.data import labels as L
from cxraug.data.labeler_cues import classify, clause_bounds
from cxraug.data.labeler_phrases import RULES, Rule
from cxraug.data.labeler_vocab import text_problem
from cxraug.data.reports import labeling_text, split_sentences


@dataclass(frozen=True)
class Mention:
    """One classified mention inside a sentence (character offsets into ``sentence``)."""

    observation: str
    value: float  # labels.POSITIVE / NEGATIVE / UNCERTAIN
    start: int
    end: int
    sentence: str
    kind: str = "mention"

    @property
    def text(self) -> str:
        return self.sentence[self.start:self.end]


_RANK = {L.POSITIVE: 3, L.UNCERTAIN: 2, L.NEGATIVE: 1}

class RuleLabeler:
    """The embedded labeler: report text -> raw CheXpert 14-vector (see module docstring).

    ``label(texts)`` returns ``float32 [N, 14]`` in :data:`cxraug.data.labels.OBSERVATIONS`
    order with values 1 / 0 / -1 / NaN, the same output as :class:`cxraug.data.chexbert.CheXbert`.
    """

    name = "rule"

    def __init__(self, rules: Sequence[Rule] | None = None) -> None:
        self.rules = list(RULES if rules is None else rules)

    # -------------------------------------------------------------- one sentence
    def sentence_mentions(self, sentence: str) -> list[Mention]:
        """Classified mentions in one sentence (already cleaned; case does not matter)."""
        s = sentence.lower()
        found: list[tuple[int, int, int, int, Rule]] = []  # start, end, anchor start/end, rule
        for rule in self.rules:
            for m in rule.pattern.finditer(s):
                if m.end() == m.start():
                    continue
                a0, a1 = (m.span("a") if "a" in rule.pattern.groupindex and m.group("a")
                          else m.span())
                found.append((m.start(), m.end(), a0, a1, rule))
        ignored = [(f[0], f[1]) for f in found if f[4].kind == "ignore"]
        out: list[Mention] = []
        for start, end, a0, a1, rule in found:
            if rule.kind == "ignore" or any(i0 < a1 and a0 < i1 for i0, i1 in ignored):
                continue
            if any(m.start < a1 and a0 < m.end and m.observation in rule.observations
                   and m.kind == rule.kind for m in out):
                continue  # two phrases of one observation on the same words: one mention
            if rule.kind == "mention":
                c0, c1 = clause_bounds(s, a0, a1)
                value = classify(s[c0:a0], s[a1:c1])
            else:
                value = L.NEGATIVE if rule.kind == "normal" else L.UNCERTAIN
            for obs in rule.observations:
                out.append(Mention(obs, value, a0, a1, sentence, rule.kind))
        return out

    def sentence_labels(self, sentence: str) -> np.ndarray:
        """Aggregated raw vector of one sentence (No Finding left NaN)."""
        return _aggregate(self.sentence_mentions(sentence))

    # --------------------------------------------------------------- one report
    def mentions(self, text: str) -> list[Mention]:
        """All classified mentions of a report's findings + impression."""
        return [m for s in split_sentences(labeling_text(text)) for m in self.sentence_mentions(s)]

    def label_text(self, text: str | None) -> np.ndarray:
        """Raw ``float32[14]`` for one report; No Finding derived from the other 13.

        An empty report, or text that is not a report (:func:`text_problem`), is unlabelled:
        every observation blank, No Finding included.
        """
        if text_problem(text) is not None:
            return L.empty_vector()
        return L.derive_no_finding(_aggregate(self.mentions(text or "")))

    def label(self, texts: Iterable[str | None]) -> np.ndarray:
        """Raw ``float32 [N, 14]`` for a list of reports."""
        rows = [self.label_text(t) for t in texts]
        return np.stack(rows) if rows else np.zeros((0, L.N_OBS), np.float32)


def _aggregate(mentions: Iterable[Mention]) -> np.ndarray:
    """Positive beats uncertain beats negative beats not mentioned."""
    out = L.empty_vector()
    for m in mentions:
        i = L.OBSERVATIONS.index(m.observation)
        if np.isnan(out[i]) or _RANK[m.value] > _RANK[float(out[i])]:
            out[i] = m.value
    return out


def label_reports(texts: Iterable[str | None]) -> np.ndarray:
    """Convenience: :class:`RuleLabeler` over ``texts`` -> ``float32 [N, 14]``."""
    return RuleLabeler().label(texts)


# ------------------------------------------------------------------------------ helpers

LABELERS = ("rule", "chexbert")


def make_labeler(name: str = "rule", weights: str | Path | None = None,
                 tokenizer: str | Path | None = None, batch_size: int = 16):
    """``"rule"`` -> :class:`RuleLabeler`; ``"chexbert"`` -> :class:`cxraug.data.chexbert.CheXbert`
    (needs local ``weights`` and ``tokenizer``; raises WeightsError otherwise)."""
    if name == "rule":
        return RuleLabeler()
    if name == "chexbert":
        # lazy: chexbert loads torch, which the rule labeler (and `cxraug label`) never needs
        from cxraug.data.chexbert import CheXbert

        return CheXbert(weights, tokenizer, batch_size=batch_size)
    raise CxraugError(f"unknown labeler {name!r}; use one of: {', '.join(LABELERS)}")


def write_labels_csv(path: str | Path, ids: Sequence[str], labels: np.ndarray,
                     id_column: str = "id") -> Path:
    """Write ``id_column`` + the 14 observations (CheXbert order) coded 1.0 / 0.0 / -1.0 / blank."""
    labels = L.check_raw(labels, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([id_column, *L.OBSERVATIONS])
        for i, row in zip(ids, labels):
            w.writerow([i, *(L.to_csv_value(float(x)) for x in row)])
    tmp.replace(path)
    return path
