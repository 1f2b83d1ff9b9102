"""Segmenter: loads ChrRender once and segments MCIs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from karyoflow.segment.dataset import boxes_from_masks, image_tensor
from karyoflow.segment.engines import NATIVE_SIZE
from karyoflow.segment.evaluate import Detections, mask_iou_matrix, match_instances
from karyoflow.segment.model import build_model
from karyoflow.weights_io import load_checked, save_fp16

WEIGHTS_FORMAT = "karyoflow-chrrender/1"


def save_segmenter(model: torch.nn.Module, path: Path, meta: dict) -> str:
    return save_fp16(model, path, WEIGHTS_FORMAT, meta)


def load_torchvision_segmenter(path: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """ChrRender of the default engine from its weights file (engines.load_segmenter picks the
    engine)."""
    state, meta = load_checked(Path(path), WEIGHTS_FORMAT, "karyo train segment")
    short, longest = meta.get("image_size", NATIVE_SIZE)
    model = build_model(meta["backbone"], pointrend=meta["pointrend"], min_size=short, max_size=longest)
    model.load_state_dict(state)
    return model.to(device).eval(), meta


@dataclass
class RawDetections:
    """One forward pass: boxes, scores and mask probabilities (N x H x W) in image pixels."""

    boxes: np.ndarray
    scores: np.ndarray
    probabilities: np.ndarray

    def flipped(self, width: int) -> RawDetections:
        """The same detections mirrored left-right in an image `width` pixels wide."""
        boxes = self.boxes.copy()
        boxes[:, 0], boxes[:, 2] = width - self.boxes[:, 2], width - self.boxes[:, 0]
        return RawDetections(boxes, self.scores, self.probabilities[:, :, ::-1])


def _forward(model: torch.nn.Module, tensor: torch.Tensor) -> RawDetections:
    result = model([tensor])[0]
    return RawDetections(
        boxes=result["boxes"].cpu().numpy(),
        scores=result["scores"].cpu().numpy(),
        probabilities=result["masks"][:, 0].cpu().numpy(),
    )


def fuse_passes(
    first: RawDetections,
    second: RawDetections,
    mask_threshold: float = 0.5,
    match_iou: float = 0.5,
    keep: int = 100,
) -> RawDetections:
    """Weighted-box-fusion style merge of two passes over the same image (test-time flip).

    Detections are paired one to one, best score first, when their masks overlap at IoU >=
    `match_iou` (masks, not boxes: crossing chromosomes have overlapping boxes but not masks).
    A pair becomes one detection with the mean box, mean score and mean mask probability; an
    unpaired detection keeps its box and mask with half its score, as WBF scores a box found by
    one of two models. At most `keep` detections, best first (COCO counts 100)."""
    first_masks = first.probabilities > mask_threshold
    second_masks = second.probabilities > mask_threshold
    order_first = np.argsort(-first.scores, kind="stable")
    order_second = np.argsort(-second.scores, kind="stable")
    ious = mask_iou_matrix(first_masks[order_first], second_masks[order_second])
    pairs = match_instances(ious, match_iou)
    paired_first = {order_first[i] for i, _ in pairs}
    paired_second = {order_second[j] for _, j in pairs}
    boxes, scores, probabilities = [], [], []
    for i, j in pairs:
        a, b = order_first[i], order_second[j]
        boxes.append(0.5 * (first.boxes[a] + second.boxes[b]))
        scores.append(0.5 * (first.scores[a] + second.scores[b]))
        probabilities.append(0.5 * (first.probabilities[a] + second.probabilities[b]))
    for source, paired in ((first, paired_first), (second, paired_second)):
        for k in range(len(source.scores)):
            if k not in paired:
                boxes.append(source.boxes[k])
                scores.append(0.5 * source.scores[k])
                probabilities.append(source.probabilities[k])
    if not scores:
        return first
    best = np.argsort(-np.asarray(scores), kind="stable")[:keep]
    return RawDetections(
        boxes=np.asarray(boxes, dtype=np.float32)[best],
        scores=np.asarray(scores, dtype=np.float32)[best],
        probabilities=np.stack([probabilities[k] for k in best]).astype(np.float32),
    )


@torch.no_grad()
def segment_images(
    model: torch.nn.Module,
    images: list[np.ndarray],
    device: torch.device | str = "cpu",
    *,
    mask_threshold: float = 0.5,
    refine_boxes: bool = True,
    flip_tta: bool = False,
) -> list[Detections]:
    """Detections per image. With `refine_boxes` each box is the mean of the box head's
    regression and the tight box of the (PointRend-rendered) mask: the two err independently,
    and the mean is better than either on the validation MCIs (docs/segmentation.md).
    With `flip_tta` the image is also segmented mirrored left-right and the two passes are
    fused (`fuse_passes`): twice the time (opt-in; docs/segmentation.md)."""
    model.eval()
    out = []
    for image in images:
        tensor = image_tensor(image).to(device)
        if flip_tta:
            mirrored = _forward(model, tensor.flip(-1)).flipped(tensor.shape[-1])
            raw = fuse_passes(_forward(model, tensor), mirrored, mask_threshold)
            boxes, scores, masks = raw.boxes.copy(), raw.scores, raw.probabilities > mask_threshold
        else:
            # thresholded where they were computed: a quarter of the bytes of the probabilities
            result = model([tensor])[0]
            boxes, scores = result["boxes"].cpu().numpy(), result["scores"].cpu().numpy()
            masks = (result["masks"][:, 0] > mask_threshold).cpu().numpy()
        if refine_boxes and len(masks):
            filled = masks.reshape(len(masks), -1).any(axis=1)
            boxes[filled] = 0.5 * (boxes[filled] + boxes_from_masks(masks[filled]))
        out.append(Detections(boxes=boxes, scores=scores, masks=masks))
    return out
