"""PairSplitter: the two chromosomes PairSplit sees in each detection of a cell, as candidate
splits for cluster resolution (karyoflow.clusters), which keeps a split only where the cell's
karyotype assignment gets better."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from karyoflow.pairsplit.crops import crop_input, frame_of
from karyoflow.pairsplit.model import PairSplitNet
from karyoflow.weights_io import load_checked, save_fp16, sha256_of

WEIGHTS_FORMAT = "karyoflow-pairsplit/1"
MIN_PIECE_SHARE = 0.2  # each piece covers at least this share of the detection
MAX_PIECE_IOU = 0.5  # two pieces this alike are one chromosome seen twice, not a pair
BATCH = 64


def save_pair_splitter(model: PairSplitNet, path: Path, meta: dict) -> str:
    return save_fp16(model, path, WEIGHTS_FORMAT, meta)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 0.0


def two_chromosomes(a: np.ndarray, b: np.ndarray, area: int) -> bool:
    """Whether two pieces of a detection of `area` pixels are two chromosomes: each large
    enough, and not the same one twice."""
    return min(int(a.sum()), int(b.sum())) >= MIN_PIECE_SHARE * area and mask_iou(a, b) <= MAX_PIECE_IOU


def pieces_of(probabilities: np.ndarray, detection: np.ndarray, frame, threshold: float = 0.5):
    """The two full-size piece masks of one detection from the network's 2 x S x S
    probabilities, or None when it sees one chromosome. Detection pixels neither output claims
    go to the nearer piece; pixels both claim (a crossing) stay in both."""
    shape = detection.shape
    a = frame.to_image(probabilities[0], shape, threshold) & detection
    b = frame.to_image(probabilities[1], shape, threshold) & detection
    area = int(detection.sum())
    if not two_chromosomes(a, b, area):
        return None
    unclaimed = detection & ~a & ~b
    if unclaimed.any():
        distance_a = cv2.distanceTransform((~a).astype(np.uint8), cv2.DIST_L2, 3)
        distance_b = cv2.distanceTransform((~b).astype(np.uint8), cv2.DIST_L2, 3)
        a = a | (unclaimed & (distance_a <= distance_b))
        b = b | (unclaimed & (distance_b < distance_a))
    return a, b


class PairSplitter:
    """Loads PairSplit once; `propose` gives each detection's split, if it sees two."""

    def __init__(self, weights: Path, device: torch.device | str = "cpu") -> None:
        state, self.meta = load_checked(Path(weights), WEIGHTS_FORMAT, "karyo train pairsplit")
        self.model = PairSplitNet(self.meta["width"])
        self.model.load_state_dict(state)
        self.model.to(device).eval()
        self.device = device
        self.size = int(self.meta["crop_size"])
        self.info = {"file": Path(weights).name, "sha256": sha256_of(Path(weights)), "architecture": "PairSplitNet"}

    @torch.no_grad()
    def probabilities(self, image: np.ndarray, masks: list[np.ndarray]) -> tuple[np.ndarray, list]:
        """N x 2 x S x S probabilities and the crop frames of `masks` in `image` (grey, working
        representation)."""
        frames = [frame_of(mask, self.size) for mask in masks]
        crops = np.stack([crop_input(image, mask, frame) for mask, frame in zip(masks, frames, strict=True)])
        out = []
        for start in range(0, len(crops), BATCH):
            batch = torch.from_numpy(crops[start : start + BATCH]).to(self.device)
            out.append(self.model(batch).sigmoid().cpu().numpy())
        return np.concatenate(out), frames

    def propose(self, image: np.ndarray, masks: np.ndarray) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """Per detection: [] or [(piece, piece)]."""
        filled = [i for i, mask in enumerate(masks) if mask.any()]
        proposals: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in masks]
        if not filled:
            return proposals
        probabilities, frames = self.probabilities(image, [masks[i].astype(bool) for i in filled])
        for k, i in enumerate(filled):
            pieces = pieces_of(probabilities[k], masks[i].astype(bool), frames[k])
            if pieces is not None:
                proposals[i] = [pieces]
        return proposals
