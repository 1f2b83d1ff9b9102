"""Clinic and API-key administration.

python -m db.admin create-clinic NAME     # prints the clinic's first API key (shown once)
python -m db.admin create-key NAME
"""

from __future__ import annotations

import hashlib
import secrets
import sys

from sqlalchemy import select

from db.models import ApiKey, Clinic
from db.session import session_scope

KEY_PREFIX_LENGTH = 12


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key(clinic_id: int) -> tuple[str, ApiKey]:
    key = "kf_" + secrets.token_urlsafe(32)
    return key, ApiKey(clinic_id=clinic_id, prefix=key[:KEY_PREFIX_LENGTH], key_hash=hash_key(key))


def create_clinic(name: str) -> tuple[int, str]:
    """A new clinic (or the existing one of that name) and a fresh API key for it."""
    with session_scope() as session:
        clinic = session.scalar(select(Clinic).where(Clinic.name == name))
        if clinic is None:
            clinic = Clinic(name=name)
            session.add(clinic)
            session.flush()
        key, row = new_api_key(clinic.id)
        session.add(row)
        return clinic.id, key


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("create-clinic", "create-key"):
        print(__doc__, file=sys.stderr)
        return 2
    _, key = create_clinic(argv[1])
    print(key)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
