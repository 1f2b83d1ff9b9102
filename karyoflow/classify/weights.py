"""Saving and loading ChrNet4 weights with the preprocessing they were trained with."""

from __future__ import annotations

from pathlib import Path

import torch

from karyoflow.classify.model import ChrNet4
from karyoflow.resources import default_classifier_weights
from karyoflow.weights_io import WeightsError, load_checked, read_meta, save_fp16, sha256_of

WEIGHTS_FORMAT = "karyoflow-chrnet4/1"

__all__ = ["WeightsError", "default_weights", "load_weights", "save_weights", "sha256_of", "weights_stain"]


def default_weights(stain: str) -> Path:
    """The shipped ChrNet4 for a stain: Q-band (BioImLab) or G-band."""
    return default_classifier_weights(stain)


def weights_stain(meta: dict) -> str:
    """The stain a ChrNet4 was trained on (weights from before stains were recorded: Q-band)."""
    return str(meta.get("stain", "q"))


def save_weights(model: ChrNet4, path: Path, meta: dict) -> str:
    """Write fp16 weights plus metadata atomically; return the file's sha256."""
    return save_fp16(model, path, WEIGHTS_FORMAT, meta)


def load_weights(path: Path | None, device: torch.device | str = "cpu") -> tuple[ChrNet4, dict]:
    state, meta = load_checked(Path(path or default_classifier_weights()), WEIGHTS_FORMAT, "karyo train classify")
    model = ChrNet4(blocks_per_stage=tuple(meta.get("blocks_per_stage", (2, 1, 3, 2))))
    model.load_state_dict(state)
    return model.to(device).eval(), meta


def read_classifier_meta(path: Path) -> dict:
    """The metadata of ChrNet4 weights (its stain, its preprocessing) without building the model."""
    return read_meta(Path(path), WEIGHTS_FORMAT, "karyo train classify")
