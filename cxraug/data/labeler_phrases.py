"""The rule labeler's phrase lists (stage 1, mention extraction): per observation the *mention*,
*normal*, *uncertain* and *ignore* patterns of :data:`RULES`; see :mod:`cxraug.data.labeler`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cxraug.data import labels as L

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
