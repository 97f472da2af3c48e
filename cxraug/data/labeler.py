"""A rule-based report labeler in the manner of the CheXpert labeler (Irvin et al. 2019).

Three stages, as in CheXpert, written from scratch with cxraug's own phrase lists (no parser:
regular expressions over cleaned, lower-cased sentences):

1. **Mention extraction.** Each observation has phrase patterns (:data:`RULES`). Most are
   *findings* ("pleural effusion", "cardiomegaly"); some pair an anatomical subject with an
   attribute ("the heart is mildly enlarged", "widened mediastinum") and anchor on the
   attribute. *Normal* phrases ("heart size is normal", "the lungs are clear") are explicit
   negatives, *uncertain* phrases ("borderline heart size") explicit uncertains, and *ignore*
   phrases claim words that would otherwise be mis-read ("pericardial effusion", "calcified
   nodule" = a healed granuloma, "granulomatous infection", "fractured pacemaker lead").
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
:func:`text_problem`.

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
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxraug.core.errors import CxraugError
from cxraug.data import labels as L
from cxraug.data.reports import SECTION_ALIASES, labeling_text, split_sentences

# ------------------------------------------------------------------------------ phrases
# Building blocks. Patterns run on lower-cased, cleaned sentences.

HEART = (r"(?:heart(?: size| shadow| silhouette| contours?)?|cardiac(?: silhouette| shadow|"
         r" contours?| size| outline| borders?| enlargement)?)")
_MED_PART = r"(?: silhouette| contours?| shadow| width| borders?)?"
MEDIASTINUM = rf"(?:cardio[- ]?mediastinal{_MED_PART}|(?:superior )?mediastin(?:um|al){_MED_PART})"
ENLARGED = (r"(?:enlarged|enlargement|large|prominent|prominence|increased(?: in size)?|"
            r"widened|widening|wide|dilated)")
NORMAL = r"(?:normal|within normal limits|unremarkable|wnl|negative)"
BORDERLINE = (r"(?:borderline|upper limits? of normal|upper normal|top(?:s)?[- ]normal|"
              r"high[- ]normal|upper range of normal|at the upper limits?)")
# Words allowed between a subject and its attribute ("the heart is mildly enlarged").
LINK = (r"(?:(?:is|are|was|were|appears?|remains?|seems?|be|to|again|still|now|stably|"
        r"persistently|mildly|moderately|markedly|severely|slightly|minimally|somewhat|"
        r"not|significantly|massively|grossly|very|quite|also|overall|in|size|and|the|stable|"
        r"unchanged|chronically|chronic|globally|diffusely|at|least|likely|probably|"
        r"mediastinum|mediastinal|heart|cardiac|contours?|silhouette|pulmonary|vascularity|"
        r"vasculature|hila|hilar|lungs?)\s+){0,6}")
# A gap before "normal" that must not contain an abnormal word or a negation.
CLEAN_GAP = (r"(?:(?!enlarg|prominen|widen|upper|borderline|top|high|not\b|large|increas)"
             r"[^.;:]){0,60}?")

LUNG = r"(?:lungs?|lung fields?|pulmonary parenchyma|parenchyma)"


@dataclass(frozen=True)
class Rule:
    """``kind``: ``mention`` (classified by cues), ``normal`` (explicit negative), ``uncertain``,
    or ``ignore`` (claims its span so no mention overlapping it counts)."""

    observations: tuple[str, ...]
    kind: str
    pattern: re.Pattern


def _rules(observations: str | tuple[str, ...], kind: str, *patterns: str) -> list[Rule]:
    obs = (observations,) if isinstance(observations, str) else observations
    # phrases are whole words: "stent" must not match inside "consistent" or "stenting"
    return [Rule(obs, kind, re.compile(rf"(?<![a-z0-9])(?:{p})(?![a-z])")) for p in patterns]


EC, CM, LO, LL, ED, CO, PN, AT, PX, PE, PO, FR, SD = L.OBSERVATIONS[:13]

RULES: list[Rule] = [
    # --- things that look like a finding but are not one of the 14 observations
    *_rules((), "ignore",
            r"pericardial effusions?", r"(?:joint|knee|shoulder) effusions?",
            r"calcified (?:[\w-]+ ){0,3}(?:nodules?|nodular (?:densit\w+|opacit\w+)|densit\w+|"
            r"opacit\w+|granulomas?|lymph nodes?)",
            r"(?:nipple|breast|soft tissue|osseous|bone|bony|calcific) (?:shadows?|densit\w+|"
            r"opacit\w+|tissue)", r"mass effect", r"bone (?:density|mineral\w*)",
            r"(?:no|without) (?:interval |significant )?change in (?:the )?appearance",
            r"granulomatous (?:\w+ )?(?:infection|disease|process)",
            r"(?:prior|previous|old|remote|healed|treated) (?:\w+ ){0,2}infection",
            r"tubercul\w+ (?:infection|pneumonia)",
            # a broken device is not a bone fracture
            r"(?:catheter|lead|wire|screw|hardware|device)s? fracture\w*",
            r"fracture[ds]? (?:of )?(?:the )?(?:[\w-]+ ){0,3}(?:screw|wire|lead|catheter)s?\b",
            r"(?:screw|wire|lead|catheter)s? (?:is |are |appears? )?fractured"),
    # --- Enlarged Cardiomediastinum
    *_rules(EC, "mention",
            rf"{MEDIASTINUM}\s+{LINK}(?P<a>{ENLARGED})\b",
            rf"(?P<a>{ENLARGED})\s+(?:of the |in the )?(?:(?!calcified)\w+ )?{MEDIASTINUM}"
            r"(?! (?:\w+ )?(?:adenopathy|lymph|nodes?|granulomas?|calcification))",
            r"(?P<a>mediastinal (?:widening|enlargement|prominence|mass|lymphadenopathy))"),
    *_rules(EC, "normal",
            rf"{MEDIASTINUM}\b{CLEAN_GAP}\b{NORMAL}\b",
            rf"\b{NORMAL}(?: size| sized| appearing)? {MEDIASTINUM}"),
    *_rules(EC, "uncertain", rf"{MEDIASTINUM}\s+{LINK}{BORDERLINE}"),
    # --- Cardiomegaly
    *_rules(CM, "mention",
            r"cardiomegaly", r"(?P<a>cardiac enlargement|enlarged heart)",
            rf"(?<!cardio)(?<!cardio-)(?<!cardio ){HEART}\s+{LINK}(?P<a>{ENLARGED})\b",
            rf"(?P<a>{ENLARGED})\s+(?:of the |in )?(?:\w+ ){{0,2}}{HEART}\b(?![- ]?mediastin)"),
    *_rules(CM, "normal",
            rf"(?<!cardio)(?<!cardio-)(?<!cardio ){HEART}\b{CLEAN_GAP}\b{NORMAL}\b",
            rf"\b{NORMAL}(?:[- ]sized?| appearing| in size)? {HEART}\b(?![- ]?mediastin)",
            rf"\bnormal (?:size|caliber)(?: and \w+)? of the {HEART}\b(?![- ]?mediastin)"),
    *_rules(CM, "uncertain",
            rf"{HEART}\s+{LINK}{BORDERLINE}", rf"{BORDERLINE} (?:\w+ )?(?:{HEART}|cardiomegaly)"),
    # --- Lung Opacity
    *_rules(LO, "mention",
            r"opaci(?:ty|ties|fication|fications|fied)", r"infiltrat(?:e|es|ion|ions|ive)",
            r"air[- ]?space (?:disease|opacit\w+|process|filling)",
            # "density" alone is often a hernia, a nipple or a skin fold: only lung densities count
            r"(?:airspace|air space|lung|pulmonary|parenchymal|patchy|hazy|streaky|alveolar|"
            r"basilar|bibasilar|lobe|perihilar|confluent|ill-defined|linear|increased) "
            r"densit(?:y|ies)",
            r"densit(?:y|ies) (?:is |are )?(?:seen |noted |present )?(?:in|within|at|involving|"
            r"along) (?:the )?(?:[\w-]+ ){0,3}(?:lungs?|lobes?|bases?|base|lingula|apex|apices|"
            r"midlung|hemithorax|hilum|lung zones?)\b", r"haziness", r"hazy", r"ground[- ]glass",
            r"(?:reticular|reticulonodular|interstitial) (?:markings?|opacit\w+|pattern|prominence|"
            r"changes?|thickening|infiltrat\w+|densit\w+|lung disease|disease)",
            r"(?:increased|prominent|coarse|coarsened|accentuated) (?:\w+ )?(?:interstitial|"
            r"reticular) markings?"),
    *_rules((LO, CO, PN), "normal",
            rf"{LUNG} (?:(?:are|is|appear|appears|remain|remains|otherwise|now|grossly|both|"
            rf"bilaterally|well expanded and|expanded and|hyperexpanded and|hyperinflated and|"
            rf"again|essentially)\s+){{0,3}}clear\b",
            rf"\bclear {LUNG}",
            r"lungs? (?:are |is )?(?:otherwise )?free of (?:focal )?(?:disease|infiltrates?)"),
    # --- Lung Lesion
    *_rules(LL, "mention",
            r"nodules?", r"nodular lesions?",
            r"(?<!soft tissue )(?<!chest wall )(?<!breast )(?<!mediastinal )(?<!neck )(?<!thyroid )"
            r"(?<!abdominal )mass(?:es)?\b", r"(?:lung|pulmonary|cavitary|cavitating|spiculated|"
            r"parenchymal) lesions?", r"tumou?rs?", r"neoplasms?", r"carcinomas?", r"malignan\w+",
            r"metasta\w+", r"cavitary|cavitation"),
    # --- Edema
    *_rules(ED, "mention",
            r"(?<!soft tissue )edema", r"(?:vascular|venous|pulmonary|interstitial) (?:congestion|"
            r"engorgement|redistribution)", r"congestion", r"congestive", r"\bchf\b",
            r"heart failure", r"cephalization", r"kerley", r"(?:fluid|volume) overload",
            r"vascular (?:indistinctness|blurring|prominence)",
            r"indistinct (?:pulmonary )?vascul\w+",
            # signs of pulmonary venous congestion (CheXpert files congestion under Edema)
            r"(?:prominen\w+|increased|engorged|engorgement|enlarged|distended) (?:of )?(?:the )?"
            r"(?:central |upper lobe |bilateral )?(?:pulmonary |lung )?(?:vascularity|vasculature|"
            r"vessels|vascular markings)",
            rf"(?:pulmonary |lung )(?:vascularity|vasculature|vessels) (?:{LINK})(?P<a>prominent|"
            r"increased|engorged|distended)", r"pulmonary (?:are|is) engorged",
            r"pulmonary venous hypertension"),
    *_rules(ED, "normal",
            rf"(?:pulmonary )?vascula(?:rity|ture)\b{CLEAN_GAP}\b{NORMAL}\b",
            rf"\b{NORMAL} (?:pulmonary )?vascula(?:rity|ture)"),
    # --- Consolidation, Pneumonia, Atelectasis, Pneumothorax
    *_rules(CO, "mention", r"consolidat\w+"),
    *_rules(PN, "mention", r"pneumonias?", r"bronchopneumonia", r"pneumonitis",
            r"infectious (?:process|disease)", r"infections?"),
    *_rules(AT, "mention", r"atelecta\w+",
            r"(?:lobar|lobe|segmental|subsegmental|lung) collapse", r"collapse of the",
            r"(?:plate|plate-like|platelike|discoid) (?:opacit\w+|densit\w+)"),
    *_rules(PX, "mention", r"\w*pneumothora(?:x|ces)"),
    # --- Pleural Effusion
    *_rules(PE, "mention", r"effusions?", r"pleural fluid", r"hydrothorax", r"hydropneumothorax",
            r"hemothorax", r"fluid (?:in|within|tracking along) the (?:pleural|\w+ fissure)"),
    # --- Pleural Other
    *_rules(PO, "mention",
            r"pleural (?:thickening|scarring|scar|plaques?|calcifications?|reaction)",
            r"thickening of the (?:\w+ )?pleura", r"pleural[- ]?parenchymal (?:scar\w*|thickening)",
            r"pleuroparenchymal (?:scar\w*|thickening)", r"fibrothorax",
            r"apical (?:pleural )?(?:cap|capping|thickening)", r"calcified pleura\w*",
            r"(?:fissural|fissure) thickening",
            r"thicken\w* (?:of |in )?(?:the )?(?:\w+ )?fissures?"),
    # --- Fracture
    *_rules(FR, "mention", r"fractures?", r"fractured", r"\bfx\b"),
    # --- Support Devices
    *_rules(SD, "mention",
            r"pacemakers?", r"pacer", r"defibrillators?", r"\ba?icd\b",
            r"(?:central venous|venous|picc|dialysis|swan[- ]ganz|pulmonary artery|central|"
            r"jugular|subclavian|midline|port) (?:line|catheter)s?", r"catheters?",
            r"port[- ]?a[- ]?cath", r"(?:right|left|chest wall|subcutaneous|venous|"
            r"power|infusion) port\b", r"tubes?\b", r"tracheostomy",
            r"(?:sternal|sternotomy|surgical|cerclage|epicardial pacing) (?:wires?|sutures?)",
            r"(?:surgical |vascular |cholecystectomy )?clips?\b", r"stents?",
            r"(?:prosthetic|mechanical|replaced|replacement) (?:\w+ )?valves?",
            r"valve (?:replacement|prosthesis)",
            r"hardware", r"prosthes[ie]s", r"arthroplast\w+",
            r"(?:fixation|fusion) (?:plates?|screws?|rods?|hardware|devices?)",
            r"(?:pacing|pacemaker|icd) (?:leads?|wires?)", r"leads? (?:in|terminating|projecting)",
            r"devices?", r"coils?", r"drains?", r"filters?", r"(?:breast )?implants?",
            r"loop recorder", r"electrodes?", r"kyphoplast\w*|vertebroplast\w*",
            r"(?:external |cardiac |ekg |ecg )?monitor(?:ing)? leads", r"(?:ekg|ecg) leads",
            r"sutures?(?: material)?", r"surgical staples", r"(?:bone )?anchors?", r"shunt",
            r"(?:cardiac |pulse |battery )?generator", r"stimulator",
            r"tip (?:is |projecting |projects |overlying |overlies |terminating |terminates |"
            r"at |in |over |within |near |the |of |level )+(?:\w+ ){0,2}(?:svc|superior vena "
            r"cava|cavoatrial|caval|cavo-atrial|right atrium|atrial|ventricle|innominate|"
            r"brachiocephalic)"),
]

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


def _clause(sentence: str, start: int, end: int) -> tuple[int, int]:
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


_RANK = {L.POSITIVE: 3, L.UNCERTAIN: 2, L.NEGATIVE: 1}

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
                c0, c1 = _clause(s, a0, a1)
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
