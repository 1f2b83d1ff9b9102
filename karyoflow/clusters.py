"""Cluster resolution: a detection that holds two touching or crossing chromosomes is split in two.

The segmenter sometimes returns two chromosomes that touch or overlap as one instance; the cell
then lacks a chromosome and the karyotype shows a false loss. Two touching chromosomes leave
notches in the outline where they meet (concavities of the mask's contour): a cut between two
deep notches separates them. Two lying end over end bend the outline on one side only: a cut
from that notch straight across separates them (the overlap goes to one of the two). Every
detection with such notches gets a few candidate cuts; where PairSplit (karyoflow.pairsplit)
is installed, it proposes one more split per detection, two masks that may share the pixels
where the chromosomes cross. Each piece is classified like any ICI,
and a split is kept only when the karyotype-level assignment (karyoflow.karyotype) of the whole
cell gets cheaper by more than `margin` nats with the two pieces than with the whole detection.
A chromosome of a complete cell split in halves makes the cell costlier (a half fits no free
place and a surplus copy costs `gain_penalty`), so splits are taken where the karyotype has an
empty place and the pieces look like the chromosomes missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from karyoflow.karyotype import DEFAULT_GAIN_PENALTY, DEFAULT_LOSS_PENALTY, solve_assignment

MIN_NOTCH_DEPTH = 3.0  # pixels a concavity reaches into the mask to count as a notch
MIN_PIECE_SHARE = 0.2  # each piece keeps at least this share of the detection's area
MAX_CUT_TO_DEPTH = 2.5  # cut length / summed notch depth: a long shallow cut crosses a chromosome
CANDIDATES_PER_DETECTION = 3
DEFAULT_SPLIT_MARGIN = 3.0  # nats the cell's assignment must improve by to keep a split (measured: docs/pipeline.md)
DEFAULT_PAIR_SPLIT_MARGIN = 1.5  # the same for a split PairSplit proposes (measured: docs/pipeline.md)
MAX_SPLITS = 4  # per cell: more merged pairs than this means a preparation too crowded to trust


def concavity_splits(
    mask: np.ndarray,
    min_depth: float = MIN_NOTCH_DEPTH,
    min_share: float = MIN_PIECE_SHARE,
    limit: int = CANDIDATES_PER_DETECTION,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to `limit` ways to cut `mask` (H x W bool) in two along a straight line between two
    notches of its outline, or from one notch straight across, best first (short cut, deep
    notches). Each is two full-size masks;
    the pixels on the cut line go to the nearer piece."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return []
    pad = 2
    y0, x0 = max(int(ys.min()) - pad, 0), max(int(xs.min()) - pad, 0)
    y1, x1 = min(int(ys.max()) + pad + 1, mask.shape[0]), min(int(xs.max()) + pad + 1, mask.shape[1])
    crop = mask[y0:y1, x0:x1].astype(np.uint8)
    area = int(crop.sum())
    contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return []
    contour = max(contours, key=cv2.contourArea)
    if len(contour) < 8:
        return []
    hull = cv2.convexHull(contour, returnPoints=False)
    try:
        defects = cv2.convexityDefects(contour, hull)
    except cv2.error:  # a self-touching outline: no reliable hull order
        return []
    if defects is None:
        return []
    deep = [(s, e, f, d / 256.0) for s, e, f, d in defects.reshape(-1, 4) if d / 256.0 >= min_depth]
    notches = [(contour[f][0], depth) for _, _, f, depth in deep]
    scored: list[tuple[float, np.ndarray, np.ndarray]] = []
    # one notch: two chromosomes lying end over end bend the outline on one side only; cut
    # straight across from the notch, away from the hull edge it lies under
    for s, e, f, depth in deep:
        p = contour[f][0].astype(float)
        inward = p - (contour[s][0] + contour[e][0]) / 2.0
        norm = float(np.hypot(*inward))
        if norm < 1e-6:
            continue
        inward /= norm
        q = p.copy()
        for _ in range(int(2 * MAX_CUT_TO_DEPTH * depth) + 2):
            ahead = q + inward
            col, row = int(round(ahead[0])), int(round(ahead[1]))
            if not (0 <= row < crop.shape[0] and 0 <= col < crop.shape[1]) or not crop[row, col]:
                break
            q = ahead
        else:
            continue  # the cut would be longer than a notch this deep allows
        ratio = float(np.hypot(*(q - p))) / (2 * depth)
        pieces = _cut(crop, p.astype(int), (q + inward).round().astype(int), area, min_share)
        if pieces is not None:
            scored.append((ratio, *pieces))
    for i in range(len(notches)):
        for j in range(i + 1, len(notches)):
            (p, depth_p), (q, depth_q) = notches[i], notches[j]
            length = float(np.hypot(*(p - q).astype(float)))
            ratio = length / (depth_p + depth_q)
            if ratio > MAX_CUT_TO_DEPTH:
                continue
            pieces = _cut(crop, p, q, area, min_share)
            if pieces is not None:
                scored.append((ratio, *pieces))
    scored.sort(key=lambda item: item[0])
    out = []
    for _, a, b in scored[:limit]:
        full_a, full_b = np.zeros_like(mask, bool), np.zeros_like(mask, bool)
        full_a[y0:y1, x0:x1], full_b[y0:y1, x0:x1] = a, b
        out.append((full_a, full_b))
    return out


def _cut(crop: np.ndarray, p: np.ndarray, q: np.ndarray, area: int, min_share: float):
    """The two pieces of `crop` on either side of the line p-q, or None when the line does not
    cut it into two large enough parts."""
    line = np.zeros_like(crop)
    cv2.line(line, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), 1, thickness=2)
    count, components, stats, _ = cv2.connectedComponentsWithStats(crop & (1 - line), connectivity=4)
    if count < 3:
        return None
    order = 1 + np.argsort(-stats[1:, cv2.CC_STAT_AREA])
    a_label, b_label = int(order[0]), int(order[1])
    if stats[b_label, cv2.CC_STAT_AREA] < min_share * area:
        return None
    # every mask pixel (the line's and small crumbs') goes to the nearer of the two pieces
    distance_a = cv2.distanceTransform((components != a_label).astype(np.uint8), cv2.DIST_L2, 3)
    distance_b = cv2.distanceTransform((components != b_label).astype(np.uint8), cv2.DIST_L2, 3)
    inside = crop.astype(bool)
    piece_a = inside & (distance_a <= distance_b)
    return piece_a, inside & ~piece_a


@dataclass
class Split:
    """A detection replaced by two pieces; `gain`: nats the cell's assignment cost fell by."""

    parent: int  # index of the detection in the cell's candidates
    masks: tuple[np.ndarray, np.ndarray]
    probabilities: tuple[np.ndarray, np.ndarray]
    gain: float


def resolve_splits(
    masks: np.ndarray,
    probabilities: np.ndarray,
    detection_scores: np.ndarray,
    classify_masks: Callable[[list[np.ndarray]], np.ndarray],
    gain_penalty: float = DEFAULT_GAIN_PENALTY,
    loss_penalty: float = DEFAULT_LOSS_PENALTY,
    margin: float = DEFAULT_SPLIT_MARGIN,
    max_splits: int = MAX_SPLITS,
    min_piece_confidence: float = 0.0,
    max_whole_confidence: float = 1.0,
    more_candidates: Sequence[list[tuple[np.ndarray, np.ndarray]]] | None = None,
    more_margin: float | None = None,
) -> list[Split]:
    """The splits worth making in one cell, greedily best first.

    `masks` N x H x W, `probabilities` N x 24 (the classifier's), `detection_scores` N as the
    assignment takes them; `classify_masks` gives the N' x 24 probabilities of new masks cut
    from the same image. `more_candidates`: per detection, further (piece, piece) splits to
    weigh beside the concavity cuts (PairSplit's, whose pieces may share the pixels where two
    chromosomes cross), each kept at `more_margin` nats (default `margin`): a split a trained
    model proposes is evidence of two chromosomes that a notch of the outline is not. Each
    split's pieces keep the parent's detection score."""
    candidates: list[tuple[int, np.ndarray, np.ndarray, float]] = []
    for index, mask in enumerate(masks):
        candidates += [(index, a, b, margin) for a, b in concavity_splits(mask)]
        if more_candidates is not None:
            extra = margin if more_margin is None else more_margin
            candidates += [(index, a, b, extra) for a, b in more_candidates[index]]
    if not candidates:
        return []
    piece_probabilities = classify_masks([m for _, a, b, _ in candidates for m in (a, b)])
    rows = list(range(len(masks)))  # which original detections are still whole
    extra_p: list[np.ndarray] = []
    extra_scores: list[float] = []

    def cost(kept_rows: list[int], more_p: list[np.ndarray], more_scores: list[float]) -> float:
        p = np.concatenate([probabilities[kept_rows], np.asarray(more_p).reshape(-1, probabilities.shape[1])])
        scores = np.concatenate([detection_scores[kept_rows], np.asarray(more_scores, dtype=np.float64)])
        return solve_assignment(p, gain_penalty, loss_penalty, scores)[2]

    current = cost(rows, extra_p, extra_scores)
    splits: list[Split] = []
    while len(splits) < max_splits:
        best: tuple[float, float, int] | None = None  # (cost + the candidate's margin, cost, candidate)
        for c, (parent, _, _, needed) in enumerate(candidates):
            if parent not in rows or probabilities[parent].max() > max_whole_confidence:
                continue
            pa, pb = piece_probabilities[2 * c], piece_probabilities[2 * c + 1]
            if min(pa.max(), pb.max()) < min_piece_confidence:
                continue
            score = float(detection_scores[parent])
            trial = cost([r for r in rows if r != parent], [*extra_p, pa, pb], [*extra_scores, score, score])
            if best is None or trial + needed < best[0]:
                best = (trial + needed, trial, c)
        if best is None or best[0] > current:
            break
        _, trial_cost, c = best
        parent, a, b, _ = candidates[c]
        pa, pb = piece_probabilities[2 * c], piece_probabilities[2 * c + 1]
        rows.remove(parent)
        extra_p += [pa, pb]
        score = float(detection_scores[parent])
        extra_scores += [score, score]
        splits.append(Split(parent, (a, b), (pa, pb), current - trial_cost))
        current = trial_cost
    return splits


def contact_point(first: np.ndarray, second: np.ndarray) -> tuple[int, int]:
    """(x, y) where two pieces meet: the middle of the first's pixels next to the second."""
    near = cv2.dilate(second.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & first
    ys, xs = np.nonzero(near if near.any() else first)
    return int(round(float(xs.mean()))), int(round(float(ys.mean())))
