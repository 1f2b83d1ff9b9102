"""Chromosome class names and indices.

Model outputs use 0-based indices 0..23; reports use the human labels "1".."22", "X", "Y"
and the 1-based class numbers of the BioImLab file names (23 = X, 24 = Y).
"""

from __future__ import annotations

NUM_CLASSES = 24
LABELS: tuple[str, ...] = tuple([str(i) for i in range(1, 23)] + ["X", "Y"])
LABEL_TO_INDEX: dict[str, int] = {label: i for i, label in enumerate(LABELS)}


def index_from_class_number(number: int) -> int:
    """BioImLab class number (1..24) -> model index (0..23)."""
    if not 1 <= number <= NUM_CLASSES:
        raise ValueError(f"chromosome class number must be 1..24, got {number}")
    return number - 1


def label_from_index(index: int) -> str:
    return LABELS[index]
