"""The documentation describes the product, not how it was built: no work sessions, issue
numbers or "we added" in README.md, docs/ and the model cards (git history keeps that), and the
README's layout section names the packages and modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "models").glob("*.md"))]

BUILD_HISTORY = [
    re.compile(r"\bsessions?\b", re.I),  # a work session; PRODUCT_SESSION lines excepted
    re.compile(r"\bissues?\s*#?\d+", re.I),
    re.compile(r"\bthe issue'?s?\b", re.I),
    re.compile(r"\(#\d+\)|(?<![\w&/])#\d+\b"),
    re.compile(r"\bwe (added|tried|changed|trained|fixed|built|moved|removed|wrote)\b", re.I),
]
# "session" in the product's sense: SQLAlchemy's and the database's sessions
PRODUCT_SESSION = re.compile(r"SQLAlchemy|database sessions?|db\.session|session_scope|\bSession\b")


def build_history_in(text: str) -> list[str]:
    found = []
    for line in text.splitlines():
        for pattern in BUILD_HISTORY:
            match = pattern.search(line)
            if match and not ("session" in match.group(0).lower() and PRODUCT_SESSION.search(line)):
                found.append(f"{match.group(0)!r} in: {line.strip()[:120]}")
    return found


def test_docs_and_model_cards_tell_no_build_history() -> None:
    assert len(DOCS) > 5
    found = {str(path.relative_to(REPO)): hits for path in DOCS if (hits := build_history_in(path.read_text()))}
    assert not found, found


@pytest.mark.parametrize(
    "line, flagged",
    [
        ("measured in the fourth session", True),
        ("(third session)", True),
        ("AP passes the issue's 96.7", True),
        ("meets issue 3's acceptance", True),
        ("arrive with the service (#5)", True),
        ("see #12 for details", True),
        ("we added a sweeper", True),
        ("SQLAlchemy models, sessions, Alembic migrations", False),
        ("the sweeper re-enqueues stuck cases", False),
        ("[throughput](service.md#throughput)", False),
        ("the HTML entity `&#123;`", False),
    ],
)
def test_the_build_history_patterns(line: str, flagged: bool) -> None:
    assert bool(build_history_in(line)) == flagged


def test_readme_layout_names_what_exists() -> None:
    readme = (REPO / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("```")[1]
    named = re.findall(r"^\s*([\w./-]+/?)(?:,\s*([\w./-]+))?\s", layout, re.M)
    paths = [p for pair in named for p in pair if p]
    assert len(paths) > 15, layout
    parents: list[str] = []
    for line in layout.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip())) // 2
        entries = [e.strip() for e in line.strip().split("  ")[0].split(",")]
        parents = parents[:depth]
        for entry in entries:
            path = REPO.joinpath(*parents, entry)
            assert path.exists(), f"README layout names {'/'.join([*parents, entry])}, which does not exist"
        if entries[-1].endswith("/"):
            parents.append(entries[-1].rstrip("/"))
    top_level_packages = {p.parent.name for p in REPO.glob("*/__init__.py") if p.parent.name != "tests"}
    listed_top = {line.split()[0].rstrip("/") for line in layout.splitlines() if line and not line.startswith(" ")}
    assert top_level_packages <= listed_top, top_level_packages - listed_top
