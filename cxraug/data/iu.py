"""IU-Xray / Open-i reports (Demner-Fushman et al. 2016), read from torchxrayvision's copy.

torchxrayvision ships the 3,955 report XMLs as ``torchxrayvision/data/NLMCXR_reports.tgz``. They
are licensed CC BY-NC-ND 4.0 (Indiana University / National Library of Medicine), so cxraug reads
them from the installed package (or a path the user gives) and never copies them.

Each XML holds one study: four sections (COMPARISON, INDICATION, FINDINGS, IMPRESSION), the MeSH
terms human indexers assigned (``<major>``, e.g. ``"Opacity/lung/base/left/mild"``), terms a
program extracted (``<automatic>``), and the images of the study (``<parentImage id=...>``,
e.g. ``CXR1_1_IM-0001-3001``; usually one frontal and one lateral view).
"""

from __future__ import annotations

import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cxraug.core.errors import DataError
from cxraug.data.reports import clean_text

IU_ARCHIVE_NAME = "NLMCXR_reports.tgz"
IU_LICENSE = "CC BY-NC-ND 4.0 (Indiana University / Open-i, National Library of Medicine)"
IU_CITATION = ("Demner-Fushman D. et al., Preparing a collection of radiology examinations for "
               "distribution and retrieval, JAMIA 23(2):304-310, 2016")


@dataclass(frozen=True)
class IUReport:
    """One IU-Xray study.

    ``report_id`` is the Open-i uid (``"CXR1"``); ``iu_id`` its number. Text fields are cleaned
    (placeholders removed, whitespace normalised) unless read with ``clean=False``; a missing
    section is ``""``. ``mesh_major`` are the human indexers' terms (``"normal"`` for a normal
    study, ``"No Indexing"`` when not indexed); ``mesh_automatic`` the machine-extracted ones.
    ``image_ids`` are the study's image file stems, in XML order.
    """

    report_id: str
    iu_id: int
    findings: str
    impression: str
    indication: str
    comparison: str
    mesh_major: tuple[str, ...] = ()
    mesh_automatic: tuple[str, ...] = ()
    image_ids: tuple[str, ...] = ()
    image_captions: tuple[str, ...] = field(default=(), repr=False)

    @property
    def text(self) -> str:
        """Findings and impression (the text a labeler reads), joined by a space."""
        return " ".join(t for t in (self.findings, self.impression) if t)

    @property
    def sections(self) -> dict[str, str]:
        """The non-empty sections, under :func:`cxraug.data.reports.split_sections` names."""
        s = {"comparison": self.comparison, "indication": self.indication,
             "findings": self.findings, "impression": self.impression}
        return {k: v for k, v in s.items() if v}

    @property
    def is_normal(self) -> bool:
        """The indexers tagged the study ``normal``."""
        return any(t.strip().lower() == "normal" for t in self.mesh_major)


def default_iu_path() -> Path:
    """``NLMCXR_reports.tgz`` inside the installed torchxrayvision (DataError if not there)."""
    import importlib.util

    # find_spec locates the package without importing it (importing torchxrayvision pulls in
    # torch and takes seconds)
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("torchxrayvision is not installed; install it or pass the path of "
                        f"{IU_ARCHIVE_NAME} (or a folder of its XMLs)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / IU_ARCHIVE_NAME
    if not path.is_file():
        raise DataError(f"{path}: not found in the installed torchxrayvision; pass the path of "
                        f"{IU_ARCHIVE_NAME} (or a folder of its XMLs)")
    return path


def _iter_xml(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.is_dir():
        files = sorted(path.rglob("*.xml"))
        if not files:
            raise DataError(f"{path}: no .xml report files in this folder")
        for f in files:
            yield str(f), f.read_bytes()
        return
    if not path.is_file():
        raise DataError(f"{path}: IU report archive not found; pass {IU_ARCHIVE_NAME} or a folder "
                        "of its XMLs (default: the copy inside torchxrayvision)")
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                if m.isfile() and m.name.endswith(".xml"):
                    fh = tar.extractfile(m)
                    if fh is not None:
                        yield f"{path}:{m.name}", fh.read()
    except tarfile.TarError as e:
        raise DataError(f"{path}: not a readable tar archive ({e})") from None


def parse_iu_xml(data: bytes | str, where: str = "<xml>", clean: bool = True) -> IUReport:
    """Parse one Open-i report XML into an :class:`IUReport`."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise DataError(f"{where}: not valid XML ({e})") from None
    sections = {(a.get("Label") or "").strip().lower(): "".join(a.itertext())
                for a in root.iter("AbstractText")}
    fix = clean_text if clean else (lambda t: (t or "").strip())
    uid = root.find("uId")
    report_id = uid.get("id", "") if uid is not None else ""
    if not report_id:
        raise DataError(f"{where}: no <uId id=...> element; not an Open-i report XML")
    num = re.sub(r"\D", "", report_id)
    mesh = root.find("MeSH")
    major = tuple(e.text.strip() for e in (mesh.findall("major") if mesh is not None else [])
                  if e.text and e.text.strip())
    auto = tuple(e.text.strip() for e in (mesh.findall("automatic") if mesh is not None else [])
                 if e.text and e.text.strip())
    images = root.findall("parentImage")
    return IUReport(
        report_id=report_id, iu_id=int(num) if num else -1,
        findings=fix(sections.get("findings")), impression=fix(sections.get("impression")),
        indication=fix(sections.get("indication")), comparison=fix(sections.get("comparison")),
        mesh_major=major, mesh_automatic=auto,
        image_ids=tuple(im.get("id", "") for im in images),
        image_captions=tuple(fix(im.findtext("caption")) for im in images),
    )


def read_iu_reports(path: str | Path | None = None, clean: bool = True) -> list[IUReport]:
    """Read every IU-Xray report, sorted by ``iu_id``.

    ``path``: ``NLMCXR_reports.tgz``, or a folder of the extracted XMLs; default: the archive
    inside the installed torchxrayvision. ``clean=False`` keeps the ``XXXX`` placeholders (for
    inspection only: text that goes to a model must be cleaned).
    """
    path = Path(path) if path is not None else default_iu_path()
    reports = [parse_iu_xml(data, where, clean) for where, data in _iter_xml(path)]
    if not reports:
        raise DataError(f"{path}: no report XMLs inside")
    return sorted(reports, key=lambda r: (r.iu_id, r.report_id))


def iu_reports_frame(reports: list[IUReport] | None = None) -> pd.DataFrame:
    """The reports as a table: one row per study, list fields joined with ``"; "``.

    Columns: ``report_id, iu_id, findings, impression, indication, comparison, text,
    mesh_major, mesh_automatic, image_ids``.
    """
    reports = read_iu_reports() if reports is None else reports
    rows = [{"report_id": r.report_id, "iu_id": r.iu_id, "findings": r.findings,
             "impression": r.impression, "indication": r.indication, "comparison": r.comparison,
             "text": r.text, "mesh_major": "; ".join(r.mesh_major),
             "mesh_automatic": "; ".join(r.mesh_automatic), "image_ids": "; ".join(r.image_ids)}
            for r in reports]
    return pd.DataFrame(rows)


def image_to_report(reports: list[IUReport]) -> dict[str, str]:
    """Map each image id (``"CXR1_1_IM-0001-3001"``) to its study's ``report_id``."""
    return {img: r.report_id for r in reports for img in r.image_ids}
