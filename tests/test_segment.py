from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from karyoflow.data.bioimlab import read_mci
from karyoflow.segment.dataset import (
    SegmentationSample,
    boxes_from_masks,
    polygon_mask,
    sample_from_mci,
    to_coco,
    training_pair,
)
from karyoflow.segment.evaluate import (
    Detections,
    bootstrap_ap,
    coco_ap,
    coco_ap_of,
    coco_images,
    match_instances,
    whole_correct_and_counts,
)
from karyoflow.segment.model import build_model
from karyoflow.segment.pointrend import (
    PointRendMaskHead,
    fine_grained_features,
    most_uncertain_grid_points,
    point_sample,
    uncertain_points_with_randomness,
)
from karyoflow.segment.predictor import RawDetections, fuse_passes


@pytest.mark.unit
def test_polygon_mask_coco_round_trip_on_real_files(data_dir: Path, tmp_path: Path) -> None:
    mci = read_mci(data_dir / "mci" / "original_1.json")
    sample = sample_from_mci(mci)
    masks = sample.masks
    assert masks.shape == (len(mci.polygons), 576, 768) and masks.any(axis=(1, 2)).all()
    # overlapping chromosomes each keep their full mask: some pixels belong to two instances
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(to_coco([sample])))
    coco = COCO(str(path))
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert len(annotations) == len(masks)
    for annotation, mask in zip(annotations, masks, strict=True):
        assert np.array_equal(coco.annToMask(annotation), mask)
        x, y, w, h = annotation["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        # the mask follows the labelme polygon: its area is the polygon's (shoelace) area
    polygon = mci.polygons[0]
    shoelace = 0.5 * abs(
        np.dot(polygon[:, 0], np.roll(polygon[:, 1], 1)) - np.dot(polygon[:, 1], np.roll(polygon[:, 0], 1))
    )
    assert abs(masks[0].sum() - shoelace) / shoelace < 0.25


def _perfect_detections(sample: SegmentationSample) -> Detections:
    """The ground truth itself as detections, with falling scores."""
    masks = sample.masks.astype(bool)
    return Detections(boxes=boxes_from_masks(masks), scores=np.linspace(1, 0.6, len(masks)), masks=masks)


@pytest.mark.unit
def test_perfect_predictions_score_100_with_cocoeval(data_dir: Path) -> None:
    sample = sample_from_mci(read_mci(data_dir / "mci" / "original_2.json"))
    perfect = _perfect_detections(sample)
    boxes, masks = perfect.boxes, perfect.masks
    report = coco_ap([sample], [perfect])
    assert report["bbox"]["AP50"] == 100.0 and report["segm"]["AP"] == 100.0
    assert whole_correct_and_counts([sample], [perfect]) == {"wcr": 1.0, "mean_abs_count_error": 0.0}
    missing_one = Detections(boxes[1:], perfect.scores[1:], masks[1:])
    assert coco_ap([sample], [missing_one])["bbox"]["AP50"] < 100.0
    assert whole_correct_and_counts([sample], [missing_one]) == {"wcr": 0.0, "mean_abs_count_error": 1.0}


@pytest.mark.integration  # some 120 COCOevals of real MCIs: too slow for the unit layer
def test_bootstrap_intervals_bracket_the_figure_and_vanish_when_images_agree(data_dir: Path) -> None:
    samples = [sample_from_mci(read_mci(data_dir / "mci" / f"original_{n}.json")) for n in (2, 3)]
    perfect = [_perfect_detections(sample) for sample in samples]
    # the second image loses half its chromosomes: resamples of the pair now disagree
    partial = [perfect[0], Detections(perfect[1].boxes[::2], perfect[1].scores[::2], perfect[1].masks[::2])]
    same = bootstrap_ap(coco_images(samples, perfect), rounds=8)
    assert same["bbox"]["AP"] == [100.0, 100.0] and same["segm"]["AP50"] == [100.0, 100.0]
    images = coco_images(samples, partial)
    whole = coco_ap_of(images)["bbox"]["AP"]
    low, high = bootstrap_ap(images, rounds=30, seed=1)["bbox"]["AP"]
    assert low < whole < high == 100.0
    # paired against the perfect predictions: the loss is never positive, and zero only on
    # draws of the first image alone; against themselves the difference vanishes
    loss_low, loss_high = bootstrap_ap(images, rounds=30, seed=1, baseline=coco_images(samples, perfect))["bbox"]["AP"]
    assert loss_low < 0.0 and loss_high <= 0.0
    assert bootstrap_ap(images, rounds=8, baseline=images)["segm"]["AP"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="same images"):
        bootstrap_ap(images, rounds=2, baseline=images[:1])


@pytest.mark.unit
def test_match_instances_is_one_to_one() -> None:
    ious = np.array([[0.9, 0.6], [0.8, 0.2], [0.3, 0.55]])
    assert match_instances(ious) == [(0, 0), (2, 1)]


@pytest.mark.unit
@pytest.mark.parametrize("augment", ["flips", "dihedral"])
def test_augmentation_moves_masks_with_the_image(data_dir: Path, augment: str) -> None:
    sample = sample_from_mci(read_mci(data_dir / "mci" / "original_1.json"))
    rng = np.random.default_rng(3)
    shapes = set()
    for _ in range(8):
        image, target = training_pair(sample, rng, augment)
        shapes.add(tuple(image.shape[1:]))
        assert tuple(target["masks"].shape[1:]) == tuple(image.shape[1:])
        bright = image[0].numpy() > 0.3
        inside = target["masks"].numpy().any(0)
        assert bright[inside].mean() > 3 * bright[~inside].mean()
        assert (target["boxes"][:, 2:] > target["boxes"][:, :2]).all()
    # only the dihedral policy transposes (768x576 <-> 576x768)
    assert shapes == ({(576, 768)} if augment == "flips" else {(576, 768), (768, 576)})


@pytest.mark.unit
def test_unknown_augmentation_is_refused(data_dir: Path) -> None:
    sample = sample_from_mci(read_mci(data_dir / "mci" / "original_1.json"))
    with pytest.raises(ValueError, match="unknown augmentation"):
        training_pair(sample, np.random.default_rng(0), "mixup")


@pytest.mark.unit
def test_point_selection_picks_the_most_uncertain_points() -> None:
    logits = torch.full((1, 1, 8, 8), 6.0)
    uncertain = [(1, 2), (5, 5), (7, 0)]  # (row, col)
    for rank, (row, col) in enumerate(uncertain):
        logits[0, 0, row, col] = 0.1 * rank  # closer to 0 = more uncertain
    indices, coords = most_uncertain_grid_points(logits, 3)
    assert indices[0].tolist() == [row * 8 + col for row, col in uncertain]
    assert torch.allclose(coords[0, 0], torch.tensor([(2 + 0.5) / 8, (1 + 0.5) / 8]))


@pytest.mark.unit
def test_training_points_concentrate_where_the_coarse_mask_is_unsure() -> None:
    # a logit map that is 0 (unsure) on a vertical band x in [0.4, 0.6] and confident elsewhere
    xs = torch.linspace(0, 1, 28)
    band = ((xs - 0.5).abs() < 0.1).float()
    logits = (8.0 * (1 - band)).expand(28, 28)[None, None].clone()
    generator = torch.Generator().manual_seed(0)
    points = uncertain_points_with_randomness(logits, 196, 3.0, 0.75, generator=generator)
    assert points.shape == (1, 196, 2)
    in_band = ((points[0, :, 0] - 0.5).abs() < 0.12).float().mean()
    assert in_band > 0.7  # uniform sampling would put ~24% there
    all_random = uncertain_points_with_randomness(logits, 196, 3.0, 0.0, generator=generator)
    assert ((all_random[0, :, 0] - 0.5).abs() < 0.12).float().mean() < 0.45


@pytest.mark.unit
def test_point_sample_is_bilinear() -> None:
    grid = torch.arange(4.0).view(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    value = point_sample(grid, torch.tensor([[[0.5, 0.5], [0.25, 0.25]]]))
    assert torch.allclose(value, torch.tensor([[[1.5, 0.0]]]))


@pytest.mark.unit
def test_fine_features_come_from_the_right_image_and_place() -> None:
    feature_map = torch.zeros(2, 1, 16, 16)
    feature_map[1, 0, 4:8, 8:12] = 1.0  # image 1, pixels x 32..48, y 16..32 at stride 4
    boxes = [torch.zeros(0, 4), torch.tensor([[32.0, 16.0, 48.0, 32.0]])]
    coords = torch.tensor([[[0.5, 0.5], [0.5, 1.5]]])
    sampled = fine_grained_features(feature_map, boxes, coords, stride=4)
    assert sampled.shape == (1, 1, 2)
    assert sampled[0, 0, 0] == 1.0 and sampled[0, 0, 1] == 0.0


@pytest.mark.unit
@pytest.mark.parametrize("steps, size", [(1, 56), (2, 112), (3, 224)])
def test_subdivision_reaches_the_requested_resolution(steps: int, size: int) -> None:
    head = PointRendMaskHead(torch.nn.Identity(), torch.nn.Identity(), fine_channels=8, subdivision_points=100)
    coarse = torch.randn(3, 1, 28, 28)
    fine_map = torch.randn(1, 8, 32, 32)
    boxes = [torch.tensor([[10.0, 10.0, 40.0, 90.0], [50, 5, 70, 60], [0, 0, 20, 20]])]
    out = head.subdivide(coarse, fine_map, boxes, steps=steps)
    assert out.shape == (3, 1, size, size)
    # only the re-classified points differ from plain bilinear upsampling
    plain = torch.nn.functional.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)
    if steps == 1:
        changed = (out != plain).flatten(1).sum(1)
        assert (changed <= 100).all() and (changed > 0).all()


@pytest.mark.integration
@pytest.mark.parametrize("backbone, pointrend", [("resnet18", True), ("mobilenet_v3", True), ("resnet18", False)])
def test_models_train_and_predict_full_size_masks(backbone: str, pointrend: bool) -> None:
    torch.manual_seed(0)
    model = build_model(backbone, pointrend=pointrend, min_size=128, max_size=128)
    image = torch.zeros(3, 128, 128)
    image[:, 30:90, 40:52] = 1.0
    mask = torch.zeros(1, 128, 128, dtype=torch.uint8)
    mask[0, 30:90, 40:52] = 1
    target = {"boxes": torch.tensor([[40.0, 30.0, 52.0, 90.0]]), "labels": torch.tensor([1]), "masks": mask}
    model.train()
    losses = model([image], [target])
    assert set(losses) >= {"loss_mask", "loss_classifier", "loss_objectness"}
    assert ("loss_mask_point" in losses) == pointrend
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        result = model([image])[0]
    assert result["masks"].shape[1:] == (1, 128, 128)


def _crop(sample: SegmentationSample, y0: int, x0: int, size: int) -> SegmentationSample:
    """A size x size crop keeping the polygons that lie wholly inside it."""
    inside = [
        p - [x0, y0]
        for p in sample.polygons
        if p[:, 0].min() >= x0 and p[:, 0].max() < x0 + size and p[:, 1].min() >= y0 and p[:, 1].max() < y0 + size
    ]
    image = sample.image[y0 : y0 + size, x0 : x0 + size].copy()
    # pixels of chromosomes cut by the crop edge are blanked so they are not unlabelled objects
    keep = np.zeros_like(image, dtype=bool)
    for p in inside:
        keep |= polygon_mask(p, size, size).astype(bool)
    image[~keep] = 0
    return SegmentationSample(sample.name, sample.case, image, inside, ["chr"] * len(inside))


def _busiest_crop(sample: SegmentationSample, size: int) -> SegmentationSample:
    height, width = sample.image.shape
    windows = [(y0, x0) for y0 in range(0, height - size + 1, 32) for x0 in range(0, width - size + 1, 32)]
    best = max(windows, key=lambda w: len(_crop(sample, w[0], w[1], size).polygons))
    return _crop(sample, best[0], best[1], size)


@pytest.mark.integration
def test_short_overfit_run_finds_the_chromosomes_of_two_images(data_dir: Path) -> None:
    torch.manual_seed(0)
    samples = [
        _busiest_crop(sample_from_mci(read_mci(data_dir / "mci" / name)), 192)
        for name in ("original_6.json", "original_11.json")
    ]
    assert all(len(s.polygons) >= 4 for s in samples)
    model = build_model("resnet18", min_size=192, max_size=192)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(100):  # AP50 passes 60 at step 60-80 and is ~90 at 100 (CPU, seed 0, 1 or 2 threads)
        pairs = [training_pair(s, rng) for s in samples]
        losses = model([p[0] for p in pairs], [p[1] for p in pairs])
        optimizer.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
    from karyoflow.segment.predictor import segment_images

    predictions = segment_images(model, [s.image for s in samples])
    report = coco_ap(samples, predictions)
    assert report["bbox"]["AP50"] > 60.0, report
    # the mirrored pass of a model trained with flips finds them too, and fusing keeps them
    fused = coco_ap(samples, segment_images(model, [s.image for s in samples], flip_tta=True))
    assert fused["bbox"]["AP50"] > 60.0, fused


def _raw(boxes: list[list[float]], scores: list[float], width: int = 40) -> RawDetections:
    probabilities = np.zeros((len(boxes), 30, width), np.float32)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        probabilities[k, int(y0) : int(y1), int(x0) : int(x1)] = 0.9
    return RawDetections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), probabilities)


@pytest.mark.unit
def test_mirroring_detections_twice_gives_them_back_and_moves_box_with_mask() -> None:
    raw = _raw([[2, 3, 10, 20], [25, 0, 40, 5]], [0.9, 0.8])
    mirrored = raw.flipped(40)
    assert mirrored.boxes.tolist() == [[30, 3, 38, 20], [0, 0, 15, 5]]
    # the box of the mirrored mask is the mirrored box
    assert boxes_from_masks(mirrored.probabilities > 0.5).tolist() == mirrored.boxes.tolist()
    back = mirrored.flipped(40)
    assert np.array_equal(back.boxes, raw.boxes) and np.array_equal(back.probabilities, raw.probabilities)


@pytest.mark.unit
def test_fusing_two_passes_averages_pairs_and_halves_lone_detections() -> None:
    first = _raw([[2, 2, 10, 20], [20, 5, 30, 25]], [0.9, 0.6])
    # the second pass sees the first chromosome slightly shifted, misses the other one and
    # finds one of its own
    second = _raw([[4, 2, 12, 20], [32, 1, 38, 9]], [0.7, 0.8])
    fused = fuse_passes(first, second)
    assert np.allclose(fused.scores, [0.8, 0.4, 0.3])  # best first: pair, lone 0.8, lone 0.6
    assert fused.boxes.tolist() == [[3, 2, 11, 20], [32, 1, 38, 9], [20, 5, 30, 25]]
    pair = fused.probabilities[0]
    assert pair[10, 5] == pytest.approx(0.9) and pair[10, 3] == pytest.approx(0.45)
    assert fuse_passes(first, second, keep=2).scores.shape == (2,)
    # crossing masks whose boxes overlap but masks barely do are not paired
    cross = _raw([[2, 2, 10, 20]], [0.9])
    other = _raw([[2, 2, 10, 20]], [0.9])
    other.probabilities[0] = 0
    other.probabilities[0, 10:12, 0:40] = 0.9
    assert len(fuse_passes(cross, other).scores) == 2


@pytest.mark.unit
def test_select_chromosomes_drops_fragments_inside_a_better_detection() -> None:
    from karyoflow.segment.evaluate import Detections
    from karyoflow.segment.postprocess import select_chromosomes

    masks = np.zeros((4, 60, 60), bool)
    masks[0, 10:50, 10:20] = True  # a whole chromosome
    masks[1, 12:30, 11:19] = True  # a fragment of it (entirely inside)
    masks[2, 10:50, 18:28] = True  # a neighbour overlapping it a little (a fifth of its area)
    masks[3, 5:8, 40:45] = True  # weak detection
    detections = Detections(np.zeros((4, 4), np.float32), np.array([0.99, 0.9, 0.95, 0.2]), masks)
    chosen = select_chromosomes(detections, score_threshold=0.5, max_containment=0.6)
    assert chosen.scores.tolist() == [0.99, 0.95]
    assert chosen.masks.shape == (2, 60, 60)
    assert len(select_chromosomes(detections, score_threshold=0.1, max_containment=0.6).scores) == 3
    assert len(select_chromosomes(detections, score_threshold=0.5, max_containment=1.01).scores) == 3


@pytest.mark.integration
def test_eval_segment_with_tta_reports_the_single_pass_and_the_paired_gain(labelled_dir: Path, tmp_path: Path) -> None:
    from karyoflow.cli import main

    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [], "val": ["2"]}))
    plain_json, tta_json = tmp_path / "plain.json", tmp_path / "tta.json"
    common = ["eval", "segment", "--data", str(labelled_dir), "--split", str(split)]
    assert main([*common, "--json", str(plain_json)]) == 0
    assert main([*common, "--tta", "--bootstrap", "3", "--json", str(tta_json)]) == 0
    plain, tta = json.loads(plain_json.read_text()), json.loads(tta_json.read_text())
    assert plain["images"] == tta["images"] == ["original_2"]
    assert plain["test_time_augmentation"] is None and tta["test_time_augmentation"]
    # the single pass inside the TTA run is the plain run, figure for figure
    assert tta["single_pass"] == {"bbox": plain["bbox"], "segm": plain["segm"]}
    assert plain["bbox"]["AP50"] > 90.0 and tta["bbox"]["AP50"] > 90.0
    gain = tta["bootstrap_95"]["tta_gain"]
    # one image: every draw is that image, so the paired gain is exactly the difference
    for kind in ("bbox", "segm"):
        difference = round(tta[kind]["AP"] - plain[kind]["AP"], 2)
        assert gain[kind]["AP"] == pytest.approx([difference, difference], abs=0.011)


@pytest.mark.integration
def test_train_segment_checkpoints_resumes_and_refuses_extra_data_of_validation_cells(
    labelled_dir: Path, tmp_path: Path, capsys
) -> None:
    from karyoflow.cli import main
    from karyoflow.segment.engines import load_segmenter

    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["2"], "val": ["1"]}))
    for case in ("1", "2"):
        assert main(["data", "synth", "--data", str(labelled_dir), "--cases", case, "--out", str(tmp_path / case)]) == 0
    out = tmp_path / "seg.pt"
    common = ["train", "segment", "--data", str(labelled_dir), "--split", str(split), "--out", str(out)]
    common += ["--batch-size", "1", "--warmup", "1", "--checkpoint-every", "1", "--threads", "2"]
    capsys.readouterr()
    # a synthetic MCI of validation cell 1 would show the model a validation cell: refused
    assert main([*common, "--steps", "1", "--extra-data", str(tmp_path / "1")]) == 2
    assert "validation cells 1" in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".ckpt").exists()
    assert main([*common, "--steps", "1", "--extra-data", str(tmp_path / "2")]) == 0
    assert "training on 2 MCIs from 1 cells (1 from --extra-data)" in capsys.readouterr().out
    assert main([*common, "--steps", "2", "--extra-data", str(tmp_path / "2"), "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    model, meta = load_segmenter(out)
    assert meta["steps_done"] == 2 and meta["train_config"]["extra_data"] == [str(tmp_path / "2")]
    assert len(meta["history"]) >= 2 and {
        p.dtype for p in torch.load(out, weights_only=True)["state_dict"].values()
    } == {torch.float16}


@pytest.mark.unit
def test_majority_stain_is_what_most_mcis_were_photographed_in() -> None:
    from karyoflow.segment.dataset import SegmentationSample, majority_stain

    def sample(stain: str) -> SegmentationSample:
        return SegmentationSample("mci", "cell", np.zeros((4, 4), np.uint8), [], [], stain)

    assert majority_stain([sample("g"), sample("q"), sample("g")]) == "g"
    assert majority_stain([sample("q")]) == "q"
    assert majority_stain([]) == "q"
