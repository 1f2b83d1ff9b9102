"""API keys per clinic: `X-API-Key: kf_...`, or, for the browser pages (dashboard, case review),
the same key kept in an HttpOnly, SameSite=strict cookie after logging in. A request sees only
its own clinic's cases."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Cookie, Depends, Header, HTTPException
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import answers
from db.admin import KEY_PREFIX_LENGTH, hash_key
from db.models import ApiKey, Case
from db.session import get_sessionmaker

MAX_KEY_LENGTH = 100  # generated keys have 46 characters

SESSION_COOKIE = "karyoflow_key"  # the browser pages' login (the clinic's key)


@answers(503)  # the database unreachable (api.errors)
def get_db() -> Iterator[Session]:
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.close()


@dataclass(frozen=True)
class Caller:
    clinic_id: int
    api_key_id: int


def caller_for_key(db: Session, key: str | None) -> Caller | None:
    """The clinic and key row of a valid, unrevoked key, else None. Keys are short printable
    ASCII ("kf_" and URL-safe base64): anything else is no key, and never reaches the database
    (which cannot compare a NUL)."""
    if not key or len(key) > MAX_KEY_LENGTH or not (key.isascii() and key.isprintable()):
        return None
    row = db.scalar(
        select(ApiKey).where(
            ApiKey.prefix == key[:KEY_PREFIX_LENGTH], ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None)
        )
    )
    return Caller(row.clinic_id, row.id) if row is not None else None


def clinic_for_key(db: Session, key: str | None) -> int | None:
    """The clinic of a valid, unrevoked key, else None."""
    caller = caller_for_key(db, key)
    return caller.clinic_id if caller is not None else None


@answers(401)
def current_caller(
    db: Annotated[Session, Depends(get_db)], x_api_key: Annotated[str | None, Header()] = None
) -> Caller:
    if not x_api_key:
        raise HTTPException(401, "missing X-API-Key header", headers={"WWW-Authenticate": "ApiKey"})
    caller = caller_for_key(db, x_api_key)
    if caller is None:
        raise HTTPException(401, "unknown or revoked API key", headers={"WWW-Authenticate": "ApiKey"})
    return caller


def current_clinic(caller: Annotated[Caller, Depends(current_caller)]) -> int:
    return caller.clinic_id


@answers(401)
def key_or_cookie_caller(
    db: Annotated[Session, Depends(get_db)],
    x_api_key: Annotated[str | None, Header()] = None,
    karyoflow_key: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None,
) -> Caller:
    """The caller of a route the review pages call from the browser as well as clients: the
    X-API-Key header, else the login cookie (SameSite=strict: another site cannot send it)."""
    caller = caller_for_key(db, x_api_key or karyoflow_key)
    if caller is None:
        raise HTTPException(401, "log in at /cases/login, or send a valid X-API-Key header")
    return caller


def own_case(db: Session, clinic_id: int, case_id: str, lock: bool = False) -> Case:
    case = db.get(Case, case_id, with_for_update=lock or None)
    if case is None or case.clinic_id != clinic_id:
        raise HTTPException(404, f"no case {case_id}")  # another clinic's case is simply not there
    return case
