"""Segmenter: loads ChrRender once and segments MCIs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from karyoflow.segment.dataset import image_tensor
from karyoflow.segment.evaluate import Detections
from karyoflow.segment.model import build_model

WEIGHTS_FORMAT = "karyoflow-chrrender/1"
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "chrrender.pt"


class SegmenterWeightsError(ValueError):
    """A weights file is missing or not segmentation weights of this project."""


def save_segmenter(model: torch.nn.Module, path: Path, meta: dict) -> str:
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": WEIGHTS_FORMAT, "meta": meta, "state_dict": state}, tmp)
    tmp.replace(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_segmenter(path: Path | None, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise SegmenterWeightsError(f"no weights at {path}; train with 'karyo train segment' or pass --weights")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a foreign file
        raise SegmenterWeightsError(f"{path} is not a weights file: {error}") from error
    if not isinstance(blob, dict) or blob.get("format") != WEIGHTS_FORMAT:
        raise SegmenterWeightsError(f"{path} is not ChrRender weights ({WEIGHTS_FORMAT})")
    meta = blob["meta"]
    model = build_model(meta["backbone"], pointrend=meta["pointrend"])
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    return model.to(device).eval(), meta


@torch.no_grad()
def segment_images(
    model: torch.nn.Module, images: list[np.ndarray], device: torch.device | str = "cpu", mask_threshold: float = 0.5
) -> list[Detections]:
    model.eval()
    out = []
    for image in images:
        result = model([image_tensor(image).to(device)])[0]
        out.append(
            Detections(
                boxes=result["boxes"].cpu().numpy(),
                scores=result["scores"].cpu().numpy(),
                masks=(result["masks"][:, 0] > mask_threshold).cpu().numpy(),
            )
        )
    return out
