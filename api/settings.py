"""One settings object, read from the environment (prefix KARYO_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KARYO_")

    classifier_weights: Path | None = None  # default: models/chrnet4.pt
    device: str | None = None  # cpu or cuda; default: cuda when present
    max_upload_bytes: int = 4 * 1024 * 1024
    max_icis_per_request: int = 60


@lru_cache
def get_settings() -> Settings:
    return Settings()
