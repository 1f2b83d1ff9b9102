"""Text that requests carry (query and path parameters, form fields, file names): printable, and
no longer than the column it is stored in or compared with. PostgreSQL cannot hold a NUL in
text at all, and a value longer than its column is refused at INSERT; both are refused here with
a 422 naming the field, before any database work. The same rules appear in the OpenAPI
document (`pattern`, `maxLength`), so clients and fuzzers know them."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Path
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
