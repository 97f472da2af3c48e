"""What the labelers label: text that reads as a report (:func:`text_problem`), judged by the
words the rule labeler knows. Shared by :mod:`cxraug.data.labeler` and
:mod:`cxraug.data.chexbert`, so both leave the same reports unlabelled."""

from __future__ import annotations

import re

from cxraug.data.labeler_cues import (
    CLAUSE_BREAK,
    NEG_COMPOUND,
    NEG_POST,
    NEG_POST_FAR,
    NEG_PRE,
    PSEUDO_NEG,
    UNC_COMPOUND,
    UNC_POST,
    UNC_POST_FAR,
    UNC_PRE,
)
from cxraug.data.labeler_phrases import RULES
from cxraug.data.reports import SECTION_ALIASES, labeling_text

# ------------------------------------------------------------------- what is not a report
# A report is labelled only if it reads as report text. An empty report (or one with nothing but
# indication / history) says nothing about the image: it is left unlabelled (every observation
# blank), never "No Finding". Nor is text that is not a report (random bytes, a binary file read
# as text, another language): at least MIN_KNOWN_SHARE of its words must be words the labeler
# knows - those of its phrase lists plus common report words below. On the 3,955 IU-Xray reports
# the lowest share is 0.64 (median 1.0); random characters score below 0.05.

MIN_KNOWN_SHARE = 0.3

_REPORT_WORDS = """
a an the and or of in on at to for with by from as is are was were be been has have had no not
this that these there it its which than then both each any all other only also more most few
several one two three first second third if when where while after before because but however
although though again here may will can should would could nor neither either yes under above
through within without since prior compared comparison interval new old now stable unchanged
chest lung lungs heart size right left upper lower mid middle lobe lobes base bases apex apices
bilateral mild moderate severe small large seen noted identified acute cardiopulmonary
abnormality abnormalities abnormal disease process findings finding impression normal normally
clear evidence focal airspace pulmonary vascularity mediastinal silhouette contour contours
limits osseous structures structure intact degenerative changes change spine thoracic cervical
lumbar thoracolumbar midthoracic visualized soft tissue tissues xray ray view views pa ap
lateral frontal radiograph radiographs exam examination study studies image images film films
active aorta aortic low represent represents representing thorax tortuous tortuosity
costophrenic hemidiaphragm hemidiaphragms diaphragm atherosclerotic atherosclerosis emphysema
emphysematous anterior posterior medial inferior superior proximal distal peripheral adjacent
specifically crowding patient patients typical scattered show shows ct scan blunting blunted
trachea displaced hernia hiatal deformity deformities abdomen skeletal limited inflated
multiple body bodies vertebral vertebra sided due spondylosis elevation elevated tuberculosis
obtained secondary position positioned configuration greater expanded region area areas
diffuse osteophytes clavicle rib ribs postsurgical postoperative recommended hypoinflated
hypoinflation hyperinflation hyperinflated hyperexpansion junction followup throughout copd
similar approximately associated superimposed fibrosis demonstrate demonstrates reveal reveals
related improved technique post loss disc measuring measures measure available contrast
imaging kyphosis residual projection dense curvature fat known history previously status
segment underlying descending ascending zone diameter partially extensive decreased aeration
aerated artifact aspect arteries artery pelvis head note irregular rotated indicated amount
placement coronary early round node vein diagnosis stomach result surgery expected numerous
humerus humeral shoulder bone bones osteopenia granuloma granulomas calcification
calcifications calcified nodule nodules lesion lesions density densities hilum hila hilar
well good adequate poor inspiration expiration portable upright supine erect bed line lines
place tip overlying chronic dr md date time am pm report reported discussed called physician
clinical clinically
""".split()  # noqa: SIM905 - a word list, easier to read and extend as text

_NUMBER_LIKE = re.compile(r"[\d.,:;/%x+#()\[\]-]*\d[\d.,:;/%x+()\[\]-]*(?:cm|mm|th|st|nd|rd)?")
_vocabulary: tuple[frozenset[str], re.Pattern] | None = None


def _known_words() -> tuple[frozenset[str], re.Pattern]:
    """Exact words and word stems (5+ letters, matched as prefixes) the labeler knows."""
    global _vocabulary
    if _vocabulary is None:
        sources = [r.pattern.pattern for r in RULES] + [
            p.pattern for p in (CLAUSE_BREAK, UNC_COMPOUND, PSEUDO_NEG, NEG_COMPOUND, NEG_PRE,
                                UNC_PRE, NEG_POST, UNC_POST, NEG_POST_FAR, UNC_POST_FAR)]
        words = {w for src in sources  # regex escapes (\b, \w) are not words
                 for w in re.findall(r"[a-z]{2,}", re.sub(r"\\[a-zA-Z]", " ", src))}
        words |= set(_REPORT_WORDS) | {w for a in SECTION_ALIASES for w in a.split()}
        stems = sorted((w for w in words if len(w) >= 5), key=len, reverse=True)
        _vocabulary = (frozenset(words), re.compile("|".join(stems)))
    return _vocabulary


def _is_known(word: str, words: frozenset[str], stems: re.Pattern) -> bool:
    parts = [p for p in re.split(r"[-/']", word) if p]
    return any(p in words or p.rstrip("s") in words or p + "s" in words or stems.match(p)
               for p in parts if p.isalpha())


def text_problem(text: str | None) -> str | None:
    """Why a report cannot be labelled, or None when it can.

    ``"empty"``: no findings / impression text (blank, whitespace, only indication or history).
    ``"not report text (...)"``: fewer than :data:`MIN_KNOWN_SHARE` of its words are known
    (numbers and measurements do not count either way).
    """
    body = labeling_text(text or "")
    tokens = body.split()
    if not tokens:
        return "empty"
    words, stems = _known_words()
    counted = known = 0
    for tok in tokens:
        t = tok.strip(".,;:!?()[]{}\"'`").lower()
        if not t or _NUMBER_LIKE.fullmatch(t):
            continue
        counted += 1
        known += _is_known(t, words, stems)
    if counted == 0 or known < MIN_KNOWN_SHARE * counted:
        share = known / max(counted, 1)
        return (f"not report text ({share:.0%} of {counted} words known, needs "
                f"{MIN_KNOWN_SHARE:.0%})")
    return None
