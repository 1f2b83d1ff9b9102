"""Saving and loading ChrNet4 weights with the preprocessing they were trained with."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from karyoflow.classify.model import ChrNet4

WEIGHTS_FORMAT = "karyoflow-chrnet4/1"
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "chrnet4.pt"


class WeightsError(ValueError):
    """A weights file is missing or not ChrNet4 weights of this project."""


def save_weights(model: ChrNet4, path: Path, meta: dict) -> str:
    """Write fp16 weights plus metadata atomically; return the file's sha256."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": WEIGHTS_FORMAT, "meta": meta, "state_dict": state}, tmp)
    tmp.replace(path)
    return sha256_of(path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_weights(path: Path | None, device: torch.device | str = "cpu") -> tuple[ChrNet4, dict]:
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise WeightsError(f"no weights at {path}; train with 'karyo train classify' or pass --weights")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a foreign file
        raise WeightsError(f"{path} is not a weights file: {error}") from error
    if not isinstance(blob, dict) or blob.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(f"{path} is not ChrNet4 weights ({WEIGHTS_FORMAT})")
    meta = blob["meta"]
    model = ChrNet4(blocks_per_stage=tuple(meta.get("blocks_per_stage", (2, 1, 3, 2))))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    return model.to(device).eval(), meta
