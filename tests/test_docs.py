"""The documentation's links hold and the README stays a front page.

Every relative link and image in README.md and docs/*.md points at a file that exists (relative
to the page that holds the link) and every #anchor at a heading of its Markdown file, by GitHub's
rule: lowercase; characters other than letters, digits, spaces, hyphens and underscores dropped;
spaces become hyphens; a repeated heading gets -1, -2, ... Links in fenced code blocks and inline
code are not links; http(s) and mailto links are not checked.
"""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 300

FENCE = re.compile(r"^ *(```|~~~).*?^ *\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)
EXTERNAL = ("http://", "https://", "mailto:")


def prose_of(text):
    """The text without fenced code blocks."""
    return FENCE.sub("", text)


def anchors_of(text):
    """The anchors GitHub gives the headings of a Markdown text."""
    anchors, seen = set(), {}
    for heading in HEADING.findall(prose_of(text)):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def link_targets_of(text):
    """The targets of the relative links and images of a Markdown text, in order."""
    prose = INLINE_CODE.sub("", prose_of(text))
    return [t for t in LINK.findall(prose) if not t.startswith(EXTERNAL)]


def broken_links(text, folder):
    """The link targets in `text` (a page in `folder`) that miss a file or a heading."""
    broken = []
    for target in link_targets_of(text):
        path, _, anchor = target.partition("#")
        file = (folder / path) if path else None
        if file is not None and not file.exists():
            broken.append(target)
        elif anchor and (file is None or file.suffix == ".md"):
            page = file.read_text(encoding="utf-8") if file else text
            if anchor not in anchors_of(page):
                broken.append(target)
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_and_anchor_resolves(page):
    assert broken_links(page.read_text(encoding="utf-8"), page.parent) == []


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; at most {README_MAX_LINES}"


def test_anchors_follow_githubs_rule():
    text = ("# Speed (`python bench/run_bench.py`)\n"
            "## External validation: `--evaluate`\n## A\n## A\n")
    assert anchors_of(text) == {"speed-python-benchrun_benchpy",
                                "external-validation---evaluate", "a", "a-1"}


def test_the_checker_reports_a_broken_link_and_a_broken_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Real heading\n", encoding="utf-8")
    text = ("# Top\n"
            "[fine](other.md#real-heading), [self](#top), [web](https://example.org/x#y),\n"
            "[gone](missing.md), [bad anchor](other.md#no-such-heading), ![img](missing.png)\n"
            "`[code](not-a-link.md)`\n"
            "```\n[in a fence](also-not-a-link.md)\n```\n")
    assert broken_links(text, tmp_path) == ["missing.md", "other.md#no-such-heading",
                                            "missing.png"]
