"""The rule labeler's cues (stage 2, classification): clause breaks, negation and uncertainty cue
patterns, and :func:`classify`, which calls one mention positive, negative or uncertain from its
clause; see :mod:`cxraug.data.labeler`."""

from __future__ import annotations

import re

from cxraug.data import labels as L

# -------------------------------------------------------------------------------- cues

# Clause breaks: negation/uncertainty never reaches across these.
# A break consumes only its connector word, so a cue right after it ("with possible effusion",
# "there may be") stays in the next clause.
_NEW_FINDING = (r"(?:the|mild|moderate|small|stable|persistent|increased|new|"
                r"minimal|slight|possible|probable|likely|some|bilateral|right|left|bibasilar|"
                r"basilar|trace|tiny|focal|patchy|streaky|chronic|old|healed)")
CLAUSE_BREAK = re.compile(
    r"[;:]|\bbut\b|\bhowever\b|\balthough\b|\bthough\b|\bexcept\b|\baside from\b|"
    r"\bapart from\b|\bwhich\b|\bwhereas\b|\bwhile\b|\bwith the exception of\b|"
    r"\b(?:there|these|this|it)(?= (?:is|are|was|were|has|have|may|might|could|appears?|seems?)\b)|"
    r",(?=\s+(?:and )?(?:the|there)\b)|\band(?= (?:the|there)\b)|"
    rf"(?<!compatible )(?<!consistent )\bwith(?= {_NEW_FINDING}\b)")

# Uncertainty compounds that contain a negation word: matched (and masked) first.
UNC_COMPOUND = re.compile(
    r"\b(?:can ?not|could not|can't|cannot) (?:be )?(?:\w+ )?(?:excluded?|ruled? out|rule out)\b|"
    r"\bnot (?:be )?(?:entirely |completely |totally |definitely |definitively |fully )?"
    r"(?:excluded|ruled out)\b|\b(?:difficult|hard|unable) to (?:exclude|rule out)\b|"
    r"\brule out\b|\br/o\b|\bquestion of\b")
# Negation words that do not negate what follows.
PSEUDO_NEG = re.compile(
    r"\b(?:no|without) (?:significant |appreciable |substantial |interval |definite |"
    r"radiographic |apparent ){0,2}(?:change|changes|increase|worsening|progression)"
    r"(?: in| of| from)?\b|"
    r"\bnot (?:significantly |appreciably )?(?:changed|increased|worse)\b|"
    r"\bnot only\b|"
    r"\bgram[- ]negative\b|\bage[- ]indeterminate\b|\bindeterminate age\b")
# "No findings to suggest pneumonia" negates pneumonia.
NEG_COMPOUND = re.compile(
    r"\b(?:no|without|nothing)\b.*\b(?:to suggest|suggest\w*(?: of)?|suspicious (?:for|of)|"
    r"concerning for|worrisome for|to indicate|indicative of|diagnostic of)\b")
NEG_PRE = re.compile(
    r"\b(?:no|not|without|nor|neither|negative for|free of|absence of|absent|clear|clearing of|"
    r"resolution of|resolved|resolving|removal of|removed|interval removal|rather than|"
    r"no longer|never|none)\b")
UNC_PRE = re.compile(
    r"\b(?:may|might|could|possible|possibly|probable|probably|suggest|suggests|"
    r"suggesting|suggestive|suspicious (?:for|of)|suspect|suspected|suspicion|concern|concerning|"
    r"worrisome|"
    r"questionable|questionably|question|questioned|consider|considered|consideration|"
    r"differential|versus|vs|equivocal|indeterminate|uncertain|presumed|presumably|perhaps|"
    r"cannot exclude|borderline|atypical|r/o|evaluat\w* (?:for|of)|assess\w* for|recommend\w*|"
    r"to (?:identify|evaluate|assess|exclude|look for)|further evaluation|clinical setting|"
    r"correlat\w* (?:clinically )?(?:for|with))\b|\?")
# The second half of a differential ("atelectasis or pneumonia").
OR_PRE = re.compile(r"\b(?:or|versus|vs|and/or)\.?\s+(?:[\w-]+\s+){0,2}$")
# A negation or uncertainty stated after the mention ("effusion is not seen").
_VERB = r"(?:(?:is|are|was|were|has|have|had|has been|have been|be|may be|could be|remains?)\s+)?"
NEG_POST = re.compile(
    rf"^\W*(?:[\w-]+\s+)?{_VERB}(?:(?:\w+)\s+)?(?:not (?:\w+ )?(?:seen|identified|visualized|"
    r"demonstrated|appreciated|noted|present|evident|detected|apparent|visible|definitely seen|"
    r"clearly seen)|no longer (?:\w+ )?(?:seen|present|visualized|identified|evident|visible|"
    r"demonstrated|noted|apparent)|absent|resolved|cleared|removed|been removed|not enlarged)\b|"
    r"^\W*(?:[\w-]+\s+)?(?:is|are|was|were|appears?|remains?|seems?)\s+(?:\w+\s+)?"
    r"(?:within (?:normal limits|limits of normal|the normal range)|normal)\b")
UNC_POST = re.compile(
    rf"^\W*(?:[\w-]+\s+)?{_VERB}(?:(?:\w+)\s+)?(?:possible|suspected|questioned|questionable|"
    r"probable|considered|a consideration|not (?:\w+ )?excluded|"
    r"(?:can ?not|could not) (?:be )?(?:\w+ )?(?:excluded|ruled out)|"
    r"not ruled out|in the differential|(?:would|could|may) be a consideration|a possibility)\b|"
    r"^\W*\?|"
    r"^\s*\(\?\)")
# "... have resolved" and "... cannot be excluded" refer back to the clause's subject, however far.
NEG_POST_FAR = re.compile(r"\b(?:has|have) (?:since |now |largely |completely |nearly )?"
                          r"(?:resolved|cleared|been removed)\b")
UNC_POST_FAR = re.compile(r"\b(?:can ?not|could not) (?:be )?(?:\w+ )?(?:excluded|ruled out)\b|"
                          r"\bnot (?:well|clearly)[- ](?:seen|visualized|demonstrated|evaluated)\b|"
                          r"\bnot (?:be )?(?:\w+ )?(?:excluded|ruled out)\b")
OR_POST = re.compile(r"^\s*(?:[\w-]+\s+)?(?:or|versus|vs|and/or)\b")


def clause_bounds(sentence: str, start: int, end: int) -> tuple[int, int]:
    """Bounds of the clause around ``[start, end)``: nearest clause breaks on either side."""
    lo, hi = 0, len(sentence)
    for m in CLAUSE_BREAK.finditer(sentence):
        if m.end() <= start:
            lo = max(lo, m.end())
        elif m.start() >= end:
            hi = min(hi, m.start())
            break
    return lo, hi


def _mask(text: str, pattern: re.Pattern) -> str:
    return pattern.sub(lambda m: " " * len(m.group(0)), text)


def classify(pre: str, post: str) -> float:
    """Positive / negative / uncertain for a mention with ``pre`` and ``post`` clause context."""
    # 1. Uncertainty compounds ("cannot exclude", "not ruled out") before the mention
    if UNC_COMPOUND.search(pre):
        last_unc = max(m.end() for m in UNC_COMPOUND.finditer(pre))
        rest = pre[last_unc:]
        if not NEG_PRE.search(_mask(rest, PSEUDO_NEG)):
            return L.UNCERTAIN
    # "no change in A or B" is a list, not a differential
    listed = PSEUDO_NEG.search(pre) is not None
    pre = _mask(_mask(pre, UNC_COMPOUND), PSEUDO_NEG)
    # 2. The nearest cue before the mention; "no ... to suggest" counts as a negation
    cues: list[tuple[int, float]] = [(m.end(), L.NEGATIVE) for m in NEG_COMPOUND.finditer(pre)]
    masked = _mask(pre, NEG_COMPOUND)
    cues += [(m.end(), L.NEGATIVE) for m in NEG_PRE.finditer(masked)]
    cues += [(m.end(), L.UNCERTAIN) for m in UNC_PRE.finditer(masked)]
    if cues:
        return max(cues)[1]
    if not listed and OR_PRE.search(pre):  # "atelectasis or pneumonia": a differential
        return L.UNCERTAIN
    # 3. A cue right after the mention
    hedged = UNC_POST.search(post) or UNC_POST_FAR.search(post)
    if (hedged or not listed and OR_POST.search(post)) and not NEG_POST.search(post):
        return L.UNCERTAIN
    if NEG_POST.search(_mask(post, PSEUDO_NEG)) or NEG_POST_FAR.search(post):
        return L.NEGATIVE
    return L.POSITIVE
