"""Training examples for PairSplit, composed from single-chromosome images (ICIs).

Each example is what the segmenter hands over when it merges two chromosomes into one
detection, with the two true masks as the target: a crossing pair (the second chromosome laid
partly over the first, 4-35% of the smaller one covered, combined with a maximum as
fluorescence adds up and as the working representation of a G-band image darkens), a
touching pair (in contact, no overlap), or a single chromosome, whose target is the whole
chromosome and an empty second mask, so that the network leaves a chromosome whole. The
detection's mask is the union of the true masks, closed and sometimes grown by a pixel or two,
as the segmenter's masks are smooth and a little generous."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from karyoflow.data.synth import chromosome_mask
from karyoflow.pairsplit.crops import CROP_SIZE, crop_input, crop_target, frame_of
from karyoflow.straighten import rotate_expand

KIND_SHARES = {"crossing": 0.45, "touching": 0.25, "single": 0.30}
OVERLAP_RANGE = (0.04, 0.35)  # covered share of the smaller chromosome in a crossing pair
PLACEMENT_TRIES = 60


@dataclass
class ExampleBatch:
    inputs: np.ndarray  # N x 2 x S x S float32 (crops.crop_input)
    targets: np.ndarray  # N x 2 x S x S bool: the two chromosomes (the second empty for a single)
    kinds: list[str]


def _placed(ici: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The ICI's chromosome at a random angle and brightness, cropped to it: (pixels, mask)."""
    mask = chromosome_mask(ici)
    pixels = np.where(mask, ici.astype(np.float32) * rng.uniform(0.75, 1.15), 0)
    angle = float(rng.uniform(0, 360))
    pixels = rotate_expand(np.clip(pixels, 0, 255).astype(np.uint8), angle)
    mask = rotate_expand(mask.astype(np.uint8) * 255, angle) > 127
    ys, xs = np.nonzero(mask)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    return np.where(mask[box], pixels[box], 0), mask[box]


def compose_pair(
    first: np.ndarray, second: np.ndarray, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(image, first mask, second mask) of two ICIs crossing or touching, or None when no
    placement of that kind was found."""
    pixels_a, mask_a = _placed(first, rng)
    pixels_b, mask_b = _placed(second, rng)
    (ha, wa), (hb, wb) = mask_a.shape, mask_b.shape
    height, width = ha + 2 * hb + 2, wa + 2 * wb + 2
    full_a = np.zeros((height, width), bool)
    full_a[hb + 1 : hb + 1 + ha, wb + 1 : wb + 1 + wa] = mask_a
    near_a = cv2.dilate(full_a.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    smaller = min(int(mask_a.sum()), int(mask_b.sum()))
    for _ in range(PLACEMENT_TRIES):
        y, x = int(rng.integers(0, height - hb + 1)), int(rng.integers(0, width - wb + 1))
        window = (slice(y, y + hb), slice(x, x + wb))
        overlap = int((full_a[window] & mask_b).sum()) / smaller
        touching = bool((near_a[window] & mask_b).any())
        if (kind == "crossing" and OVERLAP_RANGE[0] <= overlap <= OVERLAP_RANGE[1]) or (
            kind == "touching" and overlap == 0 and touching
        ):
            image = np.zeros((height, width), np.uint8)
            image[hb + 1 : hb + 1 + ha, wb + 1 : wb + 1 + wa] = pixels_a
            full_b = np.zeros((height, width), bool)
            full_b[window] = mask_b
            image[window] = np.maximum(image[window], pixels_b)
            return image, full_a, full_b
    return None


def detection_mask(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What the segmenter would return for these pixels: closed, grown by 0-2 pixels."""
    mask = cv2.morphologyEx(truth.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    grow = int(rng.integers(0, 3))
    if grow:
        mask = cv2.dilate(mask, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    return mask > 0


def make_batch(icis: list[np.ndarray], count: int, rng: np.random.Generator, size: int = CROP_SIZE) -> ExampleBatch:
    """`count` examples from random ICIs, kinds drawn by KIND_SHARES."""
    kinds_available, shares = list(KIND_SHARES), np.array(list(KIND_SHARES.values()))
    inputs, targets, kinds = [], [], []
    if count == 0:
        return ExampleBatch(np.zeros((0, 2, size, size), np.float32), np.zeros((0, 2, size, size), bool), [])
    while len(inputs) < count:
        kind = kinds_available[int(rng.choice(len(kinds_available), p=shares / shares.sum()))]
        first = icis[int(rng.integers(len(icis)))]
        if kind == "single":
            pixels, mask = _placed(first, rng)
            image = np.pad(pixels, 4)
            mask_a, mask_b = np.pad(mask, 4), np.zeros((image.shape[0], image.shape[1]), bool)
        else:
            composed = compose_pair(first, icis[int(rng.integers(len(icis)))], kind, rng)
            if composed is None:
                continue
            image, mask_a, mask_b = composed
        detection = detection_mask(mask_a | mask_b, rng)
        frame = frame_of(detection, size)
        inputs.append(crop_input(image, detection, frame))
        targets.append(np.stack([crop_target(mask_a, frame), crop_target(mask_b, frame)]))
        kinds.append(kind)
    return ExampleBatch(np.stack(inputs), np.stack(targets), kinds)
