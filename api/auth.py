"""API keys per clinic: `X-API-Key: kf_...`. A request sees only its own clinic's cases."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import answers
from db.admin import KEY_PREFIX_LENGTH, hash_key
from db.models import ApiKey
from db.session import get_sessionmaker

MAX_KEY_LENGTH = 100  # generated keys have 46 characters


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
