"""The split stage on constructed clusters: two real chromosomes pasted touching."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from karyoflow.clusters import DEFAULT_SPLIT_MARGIN, concavity_splits, resolve_splits
from karyoflow.data.bioimlab import load_grey, read_ici_case
from karyoflow.data.synth import chromosome_mask, synthesize_mci
from karyoflow.labels import LABELS
from karyoflow.straighten import rotate_expand


def _upright(ici: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """The ICI's chromosome (pixels and mask) rotated by `angle`, cropped to its mask."""
    mask = chromosome_mask(ici)
    pixels = rotate_expand(np.where(mask, ici, 0).astype(np.uint8), angle)
    mask = rotate_expand(mask.astype(np.uint8) * 255, angle) > 127
    ys, xs = np.nonzero(mask)
    window = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    return pixels[window], mask[window]


def paste_touching(
    canvas: np.ndarray, first: np.ndarray, second: np.ndarray, at: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Paste two ICIs at right angles so the second's end touches the first's side (an L, as
    touching chromosomes lie in a metaphase); their full-size masks."""
    pixels_a, mask_a = _upright(first, 0.0)
    pixels_b, mask_b = _upright(second, 90.0)
    y, x = at
    full_a = np.zeros(canvas.shape, bool)
    full_a[y : y + mask_a.shape[0], x : x + mask_a.shape[1]] = mask_a
    # slide the second in from the right, level with the first's middle, until the two touch
    row = y + mask_a.shape[0] // 2 - mask_b.shape[0] // 2
    for left in range(x + mask_a.shape[1] + 20, x - 1, -1):
        full_b = np.zeros(canvas.shape, bool)
        full_b[row : row + mask_b.shape[0], left : left + mask_b.shape[1]] = mask_b
        grown = np.zeros_like(full_b)
        grown[:, :-1] |= full_b[:, 1:]
        if (grown & full_a).any():
            break
    assert not (full_a & full_b).any()
    for pixels, mask, full in ((pixels_a, mask_a, full_a), (pixels_b, mask_b, full_b)):
        ys, xs = np.nonzero(full)
        window = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        canvas[window] = np.where(mask, np.maximum(canvas[window], pixels), canvas[window])
    return full_a, full_b


def mask_classifier(image: np.ndarray, cell_masks: np.ndarray) -> Callable[[list[np.ndarray]], np.ndarray]:
    """The shipped Q-band ChrNet4 on masks cut from `image`: 24 probabilities per mask, with the
    normalisation of the cell that `cell_masks` make, as the pipeline classifies pieces."""
    from karyoflow.classify.preprocess import cell_normalisation
    from karyoflow.pipeline import Karyotyper, cut_out
    from karyoflow.straighten import straighten

    karyotyper = Karyotyper(device="cpu")
    method = karyotyper.classifier.preprocessing.method
    whole = [straighten(cut_out(image, m)[0], method).image for m in cell_masks]
    scale, level = cell_normalisation(whole, karyotyper.classifier.preprocessing.reference_size)

    def classify_masks(masks: list[np.ndarray]) -> np.ndarray:
        pieces = [straighten(cut_out(image, m)[0], method) for m in masks]
        canvases = np.stack([karyotyper.canvas(p.image, scale, level) for p in pieces])
        predictions = karyotyper.classifier.predict_canvases(canvases, np.array([p.angle for p in pieces]))
        return np.stack([p.probabilities for p in predictions])

    return classify_masks


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _cell(labelled_dir: Path, case: str) -> list[tuple[str, np.ndarray]]:
    return [(LABELS[r.class_index], load_grey(r.path)) for r in read_ici_case(labelled_dir, case)]


@pytest.mark.unit
def test_a_cut_between_the_notches_separates_two_touching_chromosomes(labelled_dir: Path) -> None:
    icis = _cell(labelled_dir, "2")
    thirteen = next(image for label, image in icis if label == "13")
    fourteen = next(image for label, image in icis if label == "14")
    canvas = np.zeros((200, 200), np.uint8)
    mask_a, mask_b = paste_touching(canvas, thirteen, fourteen, (30, 30))
    candidates = concavity_splits(mask_a | mask_b)
    assert candidates, "no cut found between two touching chromosomes"
    best = max(max(iou(a, mask_a), iou(b, mask_a)) + max(iou(a, mask_b), iou(b, mask_b)) for a, b in candidates)
    assert best > 2 * 0.85


@pytest.mark.integration
def test_the_split_stage_separates_a_touching_pair_and_leaves_a_complete_cell_alone(labelled_dir: Path) -> None:
    icis = _cell(labelled_dir, "2")  # 46,XX, never trained on
    thirteen = next(i for i, (label, _) in enumerate(icis) if label == "13")
    fourteen = next(i for i, (label, _) in enumerate(icis) if label == "14")
    others = [pair for i, pair in enumerate(icis) if i not in (thirteen, fourteen)]
    cell = synthesize_mci(others, np.random.default_rng(5), touching=0.0, overlapping=0.0)
    # the pair goes into a free strip added right of the metaphase
    image = np.pad(cell.image, ((0, 0), (0, 200)))
    cell_masks = [np.pad(mask, ((0, 0), (0, 200))) for mask in cell.masks]
    mask_a, mask_b = paste_touching(image, icis[thirteen][1], icis[fourteen][1], (200, cell.image.shape[1] + 20))

    # the cell as a segmenter that merged the touching pair would give it: 45 detections
    merged = np.stack([*cell_masks, mask_a | mask_b])
    classify_masks = mask_classifier(image, merged)
    probabilities = classify_masks(list(merged))
    splits = resolve_splits(merged, probabilities, np.ones(len(merged)), classify_masks)
    assert [split.parent for split in splits] == [len(merged) - 1]
    pieces = splits[0].masks
    assert max(iou(pieces[0], mask_a), iou(pieces[1], mask_a)) > 0.85
    assert max(iou(pieces[0], mask_b), iou(pieces[1], mask_b)) > 0.85
    classes = sorted(LABELS[int(np.argmax(p))] for p in splits[0].probabilities)
    assert classes == ["13", "14"]
    assert splits[0].gain > DEFAULT_SPLIT_MARGIN

    # every chromosome its own detection: nothing to split
    separate = np.stack([*cell_masks, mask_a, mask_b])
    assert resolve_splits(separate, classify_masks(list(separate)), np.ones(len(separate)), classify_masks) == []


@pytest.mark.integration
def test_report_points_the_reviewer_at_a_merged_pair_of_a_real_mci(labelled_dir: Path) -> None:
    """In real MCI 7 (never trained on) the segmenter returns a touching 13 and 14 as one
    detection: the call is a false 45,XX,-14 and the report says where to look."""
    from karyoflow.data.bioimlab import read_mci
    from karyoflow.pipeline import Karyotyper
    from karyoflow.report import build_report, validate_report
    from karyoflow.segment.dataset import polygon_mask

    mci = read_mci(labelled_dir / "mci" / "original_7.json")
    result = Karyotyper(device="cpu").analyse(mci.image, mci.path.name)
    report = build_report(result)
    validate_report(report)
    call = report["call"]
    assert call["karyotype"] == report["karyotype"] and 0.5 <= call["confidence"] <= 1.0
    assert call["rival"] != call["karyotype"]
    assert call["review"][0]["kind"] == "chromosome_count"
    pairs = [item for item in call["review"] if item["kind"] == "possible_merged_pair"]
    assert pairs
    height, width = mci.image.shape
    true_13_14 = [
        polygon_mask(polygon, height, width).astype(bool)
        for polygon, label in zip(mci.polygons, mci.labels, strict=True)
        if label in ("13", "14")
    ]
    assert any(any(mask[item["y"], item["x"]] for mask in true_13_14) for item in pairs[:1])
    assert "13+14" in pairs[0]["message"] or "14+13" in pairs[0]["message"]


@pytest.mark.unit
def test_a_cut_from_one_notch_separates_two_chromosomes_lying_end_over_end(labelled_dir: Path) -> None:
    """Two chromosomes whose ends overlap bend the outline on one side only: the cut runs from
    that notch straight across."""
    icis = _cell(labelled_dir, "2")
    _, mask_a = _upright(next(image for label, image in icis if label == "4"), 0.0)
    _, mask_b = _upright(next(image for label, image in icis if label == "5"), 60.0)
    full_a, full_b = np.zeros((300, 300), bool), np.zeros((300, 300), bool)
    full_a[40 : 40 + mask_a.shape[0], 100 : 100 + mask_a.shape[1]] = mask_a
    # the second starts where the first ends, its top end over the first's bottom end
    ys, xs = np.nonzero(mask_b)
    top = ys.min()
    anchor_x = int(xs[ys == top].mean())
    a_bottom = 40 + mask_a.shape[0] - 6
    a_centre = 100 + mask_a.shape[1] // 2
    full_b[
        a_bottom - top : a_bottom - top + mask_b.shape[0], a_centre - anchor_x : a_centre - anchor_x + mask_b.shape[1]
    ] = mask_b
    assert (full_a & full_b).any()
    candidates = concavity_splits(full_a | full_b)
    assert candidates
    best = max(max(iou(a, full_a), iou(b, full_a)) + max(iou(a, full_b), iou(b, full_b)) for a, b in candidates)
    assert best > 2 * 0.75
