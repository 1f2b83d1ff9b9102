"""What requests carry, checked as the OpenAPI document says. Text (query and path parameters,
form fields, file names): printable, and no longer than the column it is stored in or compared
with. PostgreSQL cannot hold a NUL in text at all, and a value longer than its column is
refused at INSERT; both are refused here with a 422 naming the field, before any database work.
The same rules appear in the document (`pattern`, `maxLength`), so clients and fuzzers know
them. Query dates and booleans: as documented (`date-time` is RFC 3339, `boolean` is true or
false), not whatever Pydantic's lax parsing would take (a number as a Unix time, "yes", "0")."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import Path
from pydantic import BeforeValidator
from sqlalchemy.orm import InstrumentedAttribute

from db.models import Case

# no NUL and no other control character (C0 or DEL): names and references are one line of text
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
_PRINTABLE = re.compile(PRINTABLE)


def column_length(column: InstrumentedAttribute) -> int:
    """The length of a String(n) column: what a value stored in or compared with it may have."""
    return column.type.length  # type: ignore[attr-defined]


def text_problem(value: str, max_length: int) -> str | None:
    """Why `value` cannot be taken as text of at most `max_length` characters, or None."""
    if len(value) > max_length:
        return f"at most {max_length} characters (got {len(value)})"
    if not _PRINTABLE.match(value):
        return "control characters (NUL, line breaks, ...) are not accepted"
    return None


CaseIdPath = Annotated[
    str, Path(max_length=column_length(Case.id), pattern=PRINTABLE, description="the case's id (from POST /v1/cases)")
]


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: object) -> object:
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError("an RFC 3339 date-time with its offset, e.g. 2026-12-03T09:00:00Z")
    return value


def _true_or_false(value: object) -> object:
    if isinstance(value, str) and value not in ("true", "false"):
        raise ValueError("true or false")
    return value


DateTimeParam = Annotated[datetime, BeforeValidator(_rfc3339)]
BooleanParam = Annotated[bool, BeforeValidator(_true_or_false)]
