"""The HTML the API serves: templates read once, filled by plain replacement (every value that
comes from a user is escaped first), and the login form shared by every page."""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "templates"


@cache
def template(name: str) -> str:
    return (TEMPLATES / name).read_text()


def fill(name: str, **values: str) -> str:
    """The template with each `{{KEY}}` replaced by its value, HTML-escaped."""
    text = template(name)
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", html.escape(str(value)))
    return text


def safe_next(path: str | None, default: str) -> str:
    """Where to go after logging in: a path on this site only (no other host)."""
    if path and path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return default


def login_html(next_path: str) -> str:
    return fill("login.html", NEXT=next_path)
