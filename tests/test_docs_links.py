"""Every relative link and image in README.md, CHANGELOG.md and docs/*.md points at a file of the
checkout (and a ``#section`` at a heading of that file), so a reader never lands on a 404."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())  # commands in code blocks are not links
    return LINK.findall(text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m) for m in re.findall(r"^#+\s+(.+)$", text, re.MULTILINE)}


def test_the_docs_pages_exist():
    names = {p.name for p in (REPO / "docs").glob("*.md")}
    assert {"training.md", "cohorts.md", "benchmarking.md", "evaluating.md", "data.md", "scaling.md",
            "troubleshooting.md", "architecture.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_images_resolve(page):
    assert page.is_file()
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...: not a file of ours
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif not str(file).startswith(str(REPO)):
            broken.append(f"{target}: outside the repository")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_the_checker_sees_links_images_and_anchors(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# A title\n[x](docs/a.md#b) ![img](fig.png)\n"
                    "```\n[not](a link)\n```\n[web](https://x.org)\n")
    assert links(page) == ["docs/a.md#b", "fig.png", "https://x.org"]
    assert anchors(page) == {"a-title"}
    assert slug("Resuming and extending") == "resuming-and-extending"
    assert slug("Does it help? The verdict") == "does-it-help-the-verdict"


def test_user_docs_hold_no_issue_numbers_or_commit_hashes():
    """User docs name features, not the tracker's issue numbers or commits."""
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = page.read_text()
        assert not re.search(r"(?<![\w&/])#\d+\b", text), page.name
        assert not re.search(r"\b[0-9a-f]{7,40}\b(?<![0-9]{7})", FENCE.sub("", text)), page.name


def test_the_changelog_has_versions_and_the_newest_is_the_packages():
    import cxraug

    text = (REPO / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", text, re.MULTILINE)
    assert text.index("## [Unreleased]") < text.index("## [" + releases[0][0] + "]")
    assert [tuple(map(int, v.split("."))) for v, _ in releases] == sorted(
        (tuple(map(int, v.split("."))) for v, _ in releases), reverse=True)
    version = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    assert releases[0][0] == version.group(1) == cxraug.__version__
