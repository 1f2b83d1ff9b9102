"""Post-processing of ChrRender's detections into a cell's chromosomes.

Mask R-CNN suppresses duplicates by box IoU only, so a fragment of a long chromosome (or one arm
of it) survives next to the whole chromosome: its box is small, the IoU with the big box low.
Such a fragment is almost entirely *inside* the other mask, which true neighbours, even
overlapping ones, are not. So a detection is dropped when more than `max_containment` of the
smaller of the two masks lies in a higher-scoring detection's mask. Both thresholds were chosen
with `scripts/sweep_segment_postprocess.py` on the validation MCIs (real and semi-synthetic);
the figures are in docs/segmentation.md.
"""

from __future__ import annotations

import numpy as np

from karyoflow.segment.dataset import boxes_from_masks
from karyoflow.segment.evaluate import Detections

DEFAULT_SCORE_THRESHOLD = 0.5
DEFAULT_MAX_CONTAINMENT = 0.6


def select_chromosomes(
    detections: Detections,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    max_containment: float = DEFAULT_MAX_CONTAINMENT,
) -> Detections:
    """Detections at or above `score_threshold`, best first, without empty masks and without
    those mostly contained in a better one."""
    order = np.argsort(-detections.scores, kind="stable")
    order = [i for i in order if detections.scores[i] >= score_threshold and detections.masks[i].any()]
    areas = {i: int(detections.masks[i].sum()) for i in order}
    boxes = {i: boxes_from_masks(detections.masks[i][None])[0].astype(int) for i in order}
    kept: list[int] = []
    for i in order:
        contained = False
        for j in kept:
            # only the overlap of the two boxes can hold common pixels
            x0, y0 = max(boxes[i][0], boxes[j][0]), max(boxes[i][1], boxes[j][1])
            x1, y1 = min(boxes[i][2], boxes[j][2]), min(boxes[i][3], boxes[j][3])
            if x0 >= x1 or y0 >= y1:
                continue
            window = (slice(y0, y1), slice(x0, x1))
            inter = int(np.logical_and(detections.masks[i][window], detections.masks[j][window]).sum())
            if inter > max_containment * min(areas[i], areas[j]):
                contained = True
                break
        if not contained:
            kept.append(i)
    index = np.array(kept, dtype=np.int64)
    height, width = detections.masks.shape[1:] if detections.masks.ndim == 3 else (0, 0)
    masks = detections.masks[index] if len(index) else np.zeros((0, height, width), bool)
    boxes = detections.boxes[index] if len(index) else np.zeros((0, 4), np.float32)
    return Detections(boxes, detections.scores[index], masks)
