"""PairSplit: its training examples, its crops, how its output becomes two pieces, the split
stage taking a crossing pair from it, and the training command."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from karyoflow.data.bioimlab import read_ici_case
from karyoflow.labels import LABELS
from karyoflow.pairsplit.crops import crop_input, crop_target, frame_of
from karyoflow.pairsplit.examples import OVERLAP_RANGE, compose_pair, make_batch
from karyoflow.pairsplit.predictor import pieces_of


def _icis(labelled_dir: Path, case: str = "2") -> dict[str, np.ndarray]:
    """One copy of each class of a real cell, in the working representation."""
    return {LABELS[r.class_index]: r.load() for r in read_ici_case(labelled_dir, case)}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _cross(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two ICIs crossing at their middles, the second at right angles over the first (an X,
    which no straight cut separates): the image and the two masks."""
    from karyoflow.data.synth import chromosome_mask
    from karyoflow.straighten import rotate_expand

    placed = []
    for ici, angle in ((first, 0.0), (second, 90.0)):
        mask = chromosome_mask(ici)
        pixels = rotate_expand(np.where(mask, ici, 0).astype(np.uint8), angle)
        mask = rotate_expand(mask.astype(np.uint8) * 255, angle) > 127
        ys, xs = np.nonzero(mask)
        window = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        placed.append((pixels[window], mask[window]))
    size = max(max(m.shape) for _, m in placed) + 4
    image, masks = np.zeros((size, size), np.uint8), []
    for pixels, mask in placed:
        y, x = (size - mask.shape[0]) // 2, (size - mask.shape[1]) // 2
        full = np.zeros((size, size), bool)
        full[y : y + mask.shape[0], x : x + mask.shape[1]] = mask
        region = image[y : y + mask.shape[0], x : x + mask.shape[1]]
        image[y : y + mask.shape[0], x : x + mask.shape[1]] = np.where(mask, np.maximum(region, pixels), region)
        masks.append(full)
    return image, masks[0], masks[1]


def _bar(shape: tuple[int, int], start: tuple[int, int], end: tuple[int, int], thickness: int = 9) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.line(mask, start, end, 1, thickness=thickness)
    return mask > 0


@pytest.mark.unit
def test_a_composed_crossing_pair_overlaps_as_asked_and_a_touching_pair_does_not(labelled_dir: Path) -> None:
    icis = _icis(labelled_dir)
    rng = np.random.default_rng(3)
    crossing = compose_pair(icis["1"], icis["7"], "crossing", rng)
    assert crossing is not None
    image, first, second = crossing
    covered = (first & second).sum() / min(first.sum(), second.sum())
    assert OVERLAP_RANGE[0] <= covered <= OVERLAP_RANGE[1]
    assert image[first & ~second].any() and image[second & ~first].any()  # both chromosomes drawn
    touching = compose_pair(icis["3"], icis["12"], "touching", rng)
    assert touching is not None
    _, first, second = touching
    assert not (first & second).any()
    grown = cv2.dilate(first.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert (grown & second).any()


@pytest.mark.unit
def test_training_examples_have_two_masks_for_a_pair_and_one_for_a_single(labelled_dir: Path) -> None:
    batch = make_batch(list(_icis(labelled_dir).values()), 40, np.random.default_rng(0), size=64)
    assert batch.inputs.shape == (40, 2, 64, 64) and batch.targets.shape == (40, 2, 64, 64)
    assert {"crossing", "touching", "single"} <= set(batch.kinds)
    for crop, target, kind in zip(batch.inputs, batch.targets, batch.kinds, strict=True):
        inside = crop[1] > 0
        assert not (target[0] & ~inside).any() and not (target[1] & ~inside).any()  # within the detection
        assert crop[0][~inside].max(initial=0) == 0  # the pixels outside the detection are zeroed
        assert target[0].any()
        assert target[1].any() == (kind != "single")


@pytest.mark.unit
def test_a_mask_goes_into_the_crop_and_back_unchanged() -> None:
    mask = _bar((300, 400), (150, 60), (230, 150), thickness=13)  # a long chromosome's size
    frame = frame_of(mask, 64)
    back = frame.to_image(crop_target(mask, frame), mask.shape)
    assert _iou(back, mask) > 0.85
    image = np.where(mask, 200, 0).astype(np.uint8)
    crop = crop_input(image, mask, frame)
    assert crop.shape == (2, 64, 64) and crop[0].max() == pytest.approx(1.0)


@pytest.mark.unit
def test_two_crossing_bars_become_two_pieces_that_share_the_crossing_and_one_bar_stays_whole() -> None:
    shape = (200, 200)
    first, second = _bar(shape, (40, 40), (160, 160)), _bar(shape, (40, 160), (160, 40))
    detection = first | second
    frame = frame_of(detection, 64)
    probabilities = np.stack([crop_target(first, frame), crop_target(second, frame)]).astype(np.float32)
    pieces = pieces_of(probabilities, detection, frame)
    assert pieces is not None
    a, b = pieces
    assert _iou(a, first) > 0.85 and _iou(b, second) > 0.85
    assert (a & b & first & second).sum() > 0.5 * (first & second).sum()  # the crossing is in both
    assert not (detection & ~(a | b)).any()  # no pixel of the detection lost

    one = _bar(shape, (40, 40), (160, 160))
    frame = frame_of(one, 64)
    whole = np.stack([crop_target(one, frame), np.zeros((64, 64), bool)]).astype(np.float32)
    assert pieces_of(whole, one, frame) is None


@pytest.mark.integration
def test_the_split_stage_takes_a_crossing_pair_from_pairsplit_where_the_cell_lacks_it(labelled_dir: Path) -> None:
    from karyoflow.clusters import DEFAULT_PAIR_SPLIT_MARGIN, resolve_splits
    from karyoflow.data.synth import synthesize_mci
    from tests.test_clusters import mask_classifier

    records = read_ici_case(labelled_dir, "2")  # 46,XX, never trained on
    icis = [(LABELS[r.class_index], r.load()) for r in records]
    one = next(i for i, (label, _) in enumerate(icis) if label == "1")
    nine = next(i for i, (label, _) in enumerate(icis) if label == "9")
    others = [pair for i, pair in enumerate(icis) if i not in (one, nine)]
    cell = synthesize_mci(others, np.random.default_rng(5), touching=0.0, overlapping=0.0)
    pair_image, pair_a, pair_b = _cross(icis[one][1], icis[nine][1])
    # the crossing pair goes into a free strip below the metaphase
    height, width = cell.image.shape
    strip = (pair_image.shape[0] + 10, 0)
    image = np.pad(cell.image, (strip, (0, max(0, pair_image.shape[1] - width))))
    cell_masks = [np.pad(m, (strip, (0, image.shape[1] - width))) for m in cell.masks]
    full_a, full_b = np.zeros(image.shape, bool), np.zeros(image.shape, bool)
    window = (slice(height + 5, height + 5 + pair_image.shape[0]), slice(0, pair_image.shape[1]))
    image[window] = np.maximum(image[window], pair_image)
    full_a[window], full_b[window] = pair_a, pair_b

    merged = np.stack([*cell_masks, full_a | full_b])  # the pair as one detection: 45 in all
    classify_masks = mask_classifier(image, merged)
    probabilities = classify_masks(list(merged))
    proposed = [[] for _ in merged]
    proposed[-1] = [(full_a, full_b)]  # what a good PairSplit proposes for the merged pair
    splits = resolve_splits(merged, probabilities, np.ones(len(merged)), classify_masks, more_candidates=proposed,
                            more_margin=DEFAULT_PAIR_SPLIT_MARGIN)  # fmt: skip
    assert [split.parent for split in splits] == [len(merged) - 1]
    a, b = splits[0].masks
    assert {_iou(a, full_a) > 0.99, _iou(b, full_b) > 0.99} == {True}
    assert (a & b).any()  # the crossing belongs to both
    assert sorted(LABELS[int(np.argmax(p))] for p in splits[0].probabilities) == ["1", "9"]
    assert splits[0].gain > DEFAULT_PAIR_SPLIT_MARGIN

    # the same proposal for a detection of a complete cell is refused
    complete = np.stack([*cell_masks, full_a, full_b])
    offered = [[] for _ in complete]
    offered[-1] = [(full_b & ~full_a, full_b & full_a)]  # halves of a chromosome already there
    assert resolve_splits(complete, classify_masks(list(complete)), np.ones(len(complete)), classify_masks,
                          more_candidates=offered, more_margin=DEFAULT_PAIR_SPLIT_MARGIN) == []  # fmt: skip


@pytest.mark.integration
def test_train_pairsplit_writes_weights_the_pipeline_loads(labelled_dir: Path, tmp_path: Path, capsys) -> None:
    import json

    from karyoflow.cli import main
    from karyoflow.pairsplit.predictor import PairSplitter

    split = tmp_path / "split.json"
    split.write_text(json.dumps({"seed": 0, "unit": "cell", "train": ["2"], "val": ["3"]}))
    out = tmp_path / "pairsplit.pt"
    command = ["train", "pairsplit", "--data", str(labelled_dir), "--split", str(split), "--out", str(out)]
    assert main([*command, "--steps", "3", "--width", "4", "--crop-size", "48", "--batch-size", "4"]) == 0
    splitter = PairSplitter(out)
    assert splitter.meta["crop_size"] == 48 and splitter.meta["steps_done"] == 3
    assert {"pairs_split", "pair_iou", "singles_whole"} <= set(splitter.meta["validation"])
    shape = (200, 200)
    masks = np.stack(
        [_bar(shape, (40, 40), (160, 160)) | _bar(shape, (40, 160), (160, 40)), _bar(shape, (10, 10), (30, 60))]
    )
    image = np.where(masks.any(axis=0), 180, 0).astype(np.uint8)
    proposals = splitter.propose(image, masks)
    assert len(proposals) == 2 and all(len(p) <= 1 for p in proposals)
    # fine-tuned from those weights with harvested examples in every batch
    from karyoflow.pairsplit.examples import ExampleBatch
    from karyoflow.pairsplit.harvest import examples_of_mci, save_examples

    pair = np.stack([_bar(shape, (40, 40), (160, 160)), _bar(shape, (40, 160), (160, 40))])
    inputs, targets, kinds = examples_of_mci(image, pair, masks[:1], 48)
    save_examples(ExampleBatch(np.stack(inputs), np.stack(targets), kinds), tmp_path / "harvested.npz")
    tuned = tmp_path / "tuned.pt"
    more = [
        "--init",
        str(out),
        "--examples",
        str(tmp_path / "harvested.npz"),
        "--val-examples",
        str(tmp_path / "harvested.npz"),
    ]
    command_tuned = [
        *command[:-1],
        str(tuned),
        "--steps",
        "2",
        "--width",
        "4",
        "--crop-size",
        "48",
        "--batch-size",
        "4",
    ]
    assert main([*command_tuned, *more]) == 0
    assert PairSplitter(tuned).meta["validation"]["harvested"]["pairs"] == 1
    # bad input: one line, exit 2
    assert main([*command, "--split", str(split), str(split)]) == 2
    assert "one --split per --data" in capsys.readouterr().err
    assert main([*command_tuned, "--init", str(out), "--width", "8"]) == 2  # weights of another width
    assert "same --width" in capsys.readouterr().err


@pytest.mark.unit
def test_harvest_keeps_the_segmenters_merged_pairs_and_single_chromosomes(tmp_path: Path) -> None:
    from karyoflow.pairsplit.examples import ExampleBatch
    from karyoflow.pairsplit.harvest import augmented, examples_of_mci, load_examples, save_examples

    shape = (240, 240)
    truth = np.stack(
        [_bar(shape, (20, 20), (100, 100)), _bar(shape, (20, 100), (100, 20)), _bar(shape, (150, 150), (220, 200))]
    )
    fragment = _bar(shape, (150, 150), (170, 165))
    detections = np.stack([truth[0] | truth[1], truth[2], fragment])
    image = np.where(truth.any(axis=0), 200, 0).astype(np.uint8)
    inputs, targets, kinds = examples_of_mci(image, truth, detections, size=64)
    assert kinds == ["merged", "single"]  # the fragment holds no whole chromosome (IoU < 0.5): no example
    assert targets[0][0].any() and targets[0][1].any()  # both chromosomes of the merged pair
    assert targets[1][0].any() and not targets[1][1].any()

    batch = ExampleBatch(np.stack(inputs), np.stack(targets), kinds)
    save_examples(batch, tmp_path / "examples.npz")
    back = load_examples(tmp_path / "examples.npz")
    assert back.kinds == kinds and np.array_equal(back.targets, batch.targets)
    assert np.allclose(back.inputs, batch.inputs, atol=1e-3)  # stored as float16
    turned = augmented(back, np.array([0, 1]), np.random.default_rng(0))
    assert [int(t.sum()) for t in turned.targets[0]] == [int(t.sum()) for t in back.targets[0]]
    assert (turned.targets[0] <= (turned.inputs[0][1] > 0)).all()  # targets turned with their input


@pytest.mark.integration
def test_cluster_resolution_uses_the_shipped_pairsplit_and_the_report_names_it(labelled_dir: Path) -> None:
    from karyoflow.data.bioimlab import read_mci
    from karyoflow.pipeline import Karyotyper
    from karyoflow.resources import default_pair_split_weights
    from karyoflow.weights_io import sha256_of

    mci = read_mci(labelled_dir / "mci" / "original_7.json")  # a merged pair (docs/pipeline.md)
    karyotyper = Karyotyper(device="cpu", resolve_clusters=True)
    result = karyotyper.analyse(mci.image, "original_7")
    assert karyotyper.settings["pair_split"] is True
    assert result.models["pair_splitter"]["sha256"] == sha256_of(default_pair_split_weights())
    assert 44 <= len(result.chromosomes) <= 47
    without = Karyotyper(device="cpu", resolve_clusters=True, pair_split=False)
    assert without.settings["pair_split"] is False and "pair_splitter" not in without.models
    assert "pair_splitter" not in Karyotyper(device="cpu").models  # only cluster resolution uses it


@pytest.mark.integration
def test_data_pairsplit_takes_examples_from_one_subsets_cells_only(data_dir: Path, tmp_path: Path, capsys) -> None:
    from karyoflow.cli import main
    from karyoflow.data.split import read_split
    from karyoflow.data.synth import synthesize_folder
    from karyoflow.pairsplit.harvest import load_examples

    split = Path(__file__).resolve().parents[1] / "splits" / "bioimlab.json"
    train_cell, val_cell = str(read_split(split, "train")[0]), str(read_split(split, "val")[0])
    synthesize_folder(data_dir, [train_cell], tmp_path / "train", per_cell=1, seed=3)
    synthesize_folder(data_dir, [val_cell], tmp_path / "val", per_cell=1, seed=3)
    out = tmp_path / "examples.npz"
    command = ["data", "pairsplit", "--split", str(split), "--out", str(out)]
    assert main([*command, "--data", str(tmp_path / "train")]) == 0
    examples = load_examples(out)
    assert examples.kinds.count("single") >= 30  # a crowded metaphase's chromosomes, most found whole
    assert examples.inputs.shape[1:] == (2, 64, 64) and len(examples.targets) == len(examples.kinds)
    assert f"-> {out}" in capsys.readouterr().out
    # training examples of a validation cell, or validation examples of a training cell: refused
    assert main([*command, "--data", str(tmp_path / "val")]) == 2
    assert f"val cells {val_cell}" in capsys.readouterr().err
    assert main([*command, "--data", str(tmp_path / "train"), "--validation"]) == 2
    assert main([*command, "--data", str(tmp_path / "val"), "--validation"]) == 0
