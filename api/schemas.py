"""Pydantic response schemas (kept apart from any ORM model)."""

from __future__ import annotations

from pydantic import BaseModel


class Health(BaseModel):
    status: str
    classifier_loaded: bool


class IciClassification(BaseModel):
    filename: str
    label: str
    class_index: int
    score: float
    top3: list[tuple[str, float]]
    angle: float


class CellClassification(BaseModel):
    n: int
    icis: list[IciClassification]
