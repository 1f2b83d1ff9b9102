"""Segmenter: loads ChrRender once and segments MCIs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from karyoflow.segment.dataset import boxes_from_masks, image_tensor
from karyoflow.segment.evaluate import Detections
from karyoflow.segment.model import build_model
from karyoflow.weights_io import load_checked, save_fp16

WEIGHTS_FORMAT = "karyoflow-chrrender/1"
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "chrrender.pt"


def save_segmenter(model: torch.nn.Module, path: Path, meta: dict) -> str:
    return save_fp16(model, path, WEIGHTS_FORMAT, meta)


def load_segmenter(path: Path | None, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    state, meta = load_checked(Path(path or DEFAULT_WEIGHTS), WEIGHTS_FORMAT, "karyo train segment")
    model = build_model(meta["backbone"], pointrend=meta["pointrend"])
    model.load_state_dict(state)
    return model.to(device).eval(), meta


@torch.no_grad()
def segment_images(
    model: torch.nn.Module,
    images: list[np.ndarray],
    device: torch.device | str = "cpu",
    mask_threshold: float = 0.5,
    refine_boxes: bool = True,
) -> list[Detections]:
    """Detections per image. With `refine_boxes` each box is the mean of the box head's
    regression and the tight box of the (PointRend-rendered) mask: the two err independently,
    and the mean is better than either on the validation MCIs (docs/segmentation.md)."""
    model.eval()
    out = []
    for image in images:
        result = model([image_tensor(image).to(device)])[0]
        boxes = result["boxes"].cpu().numpy()
        masks = (result["masks"][:, 0] > mask_threshold).cpu().numpy()
        if refine_boxes and len(masks):
            filled = masks.reshape(len(masks), -1).any(axis=1)
            boxes[filled] = 0.5 * (boxes[filled] + boxes_from_masks(masks[filled]))
        out.append(Detections(boxes=boxes, scores=result["scores"].cpu().numpy(), masks=masks))
    return out
