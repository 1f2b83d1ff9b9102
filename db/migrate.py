"""Programmatic migrations: `upgrade()` brings the configured database to the newest schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")


def alembic_config() -> Config:
    return Config(str(ALEMBIC_INI))


def upgrade(revision: str = "head") -> None:
    command.upgrade(alembic_config(), revision)
