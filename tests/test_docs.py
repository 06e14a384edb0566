"""The README stays short and is the map: every docs/ page linked from it, every relative link of
the README and docs/ resolves, the first command unchanged, and no table repeated between them."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_COMMAND = ("python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && "
                 "python -m experiments.main --config dcnv2_ml100k")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _pages():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_is_short_and_keeps_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    assert f"    {FIRST_COMMAND}" in lines and "    python -m pytest -q" in lines


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / target.split("#")[0]).resolve() for target in LINK.findall((ROOT / "README.md").read_text())}
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"


def test_relative_links_resolve():
    broken = []
    for page in _pages():
        for target in LINK.findall(page.read_text()):
            if "://" in target or target.startswith("#"):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_no_table_row_of_the_readme_is_repeated_in_docs():
    def rows(text):
        return {line.strip() for line in text.splitlines() if line.startswith("|") and not set(line) <= set("|-: ")}

    readme = rows((ROOT / "README.md").read_text())
    for page in sorted((ROOT / "docs").glob("*.md")):
        shared = readme & rows(page.read_text())
        assert not shared, f"{page.name} repeats README table rows: {sorted(shared)[:3]}"
