"""The detectron2 engine on the CPU: a tiny real training (ResNet-18-FPN PointRend, images
scaled to 120x160, batch 2, a few iterations), its prediction in the default engine's format,
and the commands that take `--engine detectron2`. detectron2 is installed by `make test`
(`make detectron2`); without it these tests fail and say so, they never skip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from karyoflow.segment.dataset import boxes_from_masks, image_tensor, load_samples

pytestmark = pytest.mark.integration

# small enough for two shared CPU cores: 576x768 MCIs are fed at 120x160
TINY = ["--backbone", "resnet18", "--image-size", "120", "160", "--batch-size", "2", "--threads", "2"]


@pytest.fixture(scope="module")
def detectron2_installed() -> None:
    from karyoflow.segment.detectron2_backend import BackendUnavailable, require_detectron2

    try:
        require_detectron2()
    except BackendUnavailable as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("split") / "split.json"
    path.write_text(json.dumps({"train": ["2", "3"], "val": ["1", "4"]}))
    return path


@pytest.fixture(scope="module")
def tiny_detectron2(detectron2_installed, labelled_dir: Path, split: Path, tmp_path_factory) -> Path:
    """Weights of 4 iterations on two labelled MCIs: real weights, useless accuracy. Four
    iterations give the LR schedule a single milestone (int(0.75 * 4) == int(0.9 * 4))."""
    from karyoflow.cli import main

    out = tmp_path_factory.mktemp("d2") / "pointrend.pt"
    command = ["train", "segment", "--engine", "detectron2", "--data", str(labelled_dir), "--split", str(split)]
    assert main([*command, "--out", str(out), "--steps", "4", "--warmup", "2", "--checkpoint-every", "2", *TINY]) == 0
    return out


def test_training_writes_fp16_weights_with_what_rebuilds_the_model(tiny_detectron2: Path) -> None:
    from karyoflow.segment.engines import load_segmenter

    blob = torch.load(tiny_detectron2, weights_only=True)
    assert blob["format"] == "karyoflow-detectron2-pointrend/1"
    assert {v.dtype for v in blob["state_dict"].values() if v.is_floating_point()} == {torch.float16}
    model, meta = load_segmenter(tiny_detectron2, "cpu", "detectron2")
    assert meta["engine"] == "detectron2" and meta["architecture"] == "PointRend (detectron2)"
    assert meta["steps_done"] == 4 and meta["lr_milestones"] == [3] and meta["image_size"] == [120, 160]
    assert meta["train_config"]["batch_size"] == 2 and meta["train_config"]["train_cases"] == ["2", "3"]
    assert [record["iteration"] for record in meta["history"]][-1] == 3  # detectron2 counts from 0
    # the training images were written from the labelme files, as PNGs of the working image
    images = sorted(p.name for p in (tiny_detectron2.parent / "pointrend.pt.detectron2" / "train" / "images").iterdir())
    assert images == ["original_2.png", "original_3.png"]


def test_a_second_run_in_the_same_process_on_other_data_resumes_and_continues(
    tiny_detectron2: Path, labelled_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from karyoflow.cli import main
    from karyoflow.segment.engines import load_segmenter

    split = tmp_path / "other.json"
    split.write_text(json.dumps({"train": ["7"], "val": ["1"]}))
    out = tmp_path / "other.pt"
    command = ["train", "segment", "--engine", "detectron2", "--data", str(labelled_dir), "--split", str(split)]
    command += ["--out", str(out), "--warmup", "1", "--checkpoint-every", "1", *TINY]
    # batch 2 from one MCI: detectron2's sampler repeats the data endlessly
    assert main([*command, "--steps", "1"]) == 0
    assert main([*command, "--steps", "2", "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    _, meta = load_segmenter(out, "cpu", "detectron2")
    assert meta["steps_done"] == 2 and meta["train_config"]["train_cases"] == ["7"]
    # only the latest checkpoint is kept
    checkpoints = sorted(p.name for p in (tmp_path / "other.pt.detectron2").glob("model_*.pth"))
    assert checkpoints == ["model_final.pth"]


def test_prediction_is_the_default_engines_detection_format(tiny_detectron2: Path, labelled_dir: Path) -> None:
    from karyoflow.segment.engines import load_segmenter
    from karyoflow.segment.postprocess import select_chromosomes
    from karyoflow.segment.predictor import segment_images

    image = load_samples(labelled_dir, ["1"])[0].image
    height, width = image.shape
    outputs = {}
    for engine, weights in (("detectron2", tiny_detectron2), ("torchvision", None)):
        model, _ = load_segmenter(weights, "cpu", engine)
        with torch.no_grad():
            outputs[engine] = model([image_tensor(image)])[0]
    ours, default = outputs["detectron2"], outputs["torchvision"]
    assert set(ours) == set(default) == {"boxes", "labels", "scores", "masks"}
    for key in ours:
        assert ours[key].dtype == default[key].dtype and ours[key].dim() == default[key].dim()
    count = len(ours["scores"])
    assert count > 0 and ours["boxes"].shape == (count, 4) and ours["masks"].shape == (count, 1, height, width)
    assert (ours["labels"] == 1).all() and 0 <= float(ours["masks"].min()) and float(ours["masks"].max()) <= 1
    assert (ours["boxes"][:, 2] <= width).all() and (ours["boxes"][:, 3] <= height).all()
    # and the shared post-processing takes it: single pass, mirrored pass, chromosome selection
    model, _ = load_segmenter(tiny_detectron2, "cpu", "detectron2")
    single, fused = (segment_images(model, [image], flip_tta=tta)[0] for tta in (False, True))
    for detections in (single, fused):
        assert detections.masks.dtype == bool and detections.masks.shape[1:] == (height, width)
        chosen = select_chromosomes(detections, score_threshold=0.0)
        assert len(chosen.scores) <= len(detections.scores)


def test_detectron2_instances_become_torchvision_detections_in_image_pixels(detectron2_installed) -> None:
    from detectron2.structures import Boxes, Instances

    from karyoflow.segment.detectron2_backend import torchvision_detections

    # predicted at half size: a box and a mask filling its lower half
    instances = Instances((60, 80))
    instances.pred_boxes = Boxes(torch.tensor([[10.0, 5.0, 30.0, 45.0]]))
    instances.scores = torch.tensor([0.9])
    instances.pred_classes = torch.tensor([0])
    grid = torch.zeros(1, 1, 28, 28)
    grid[..., 14:, :] = 1.0
    instances.pred_masks = grid
    detections = torchvision_detections(instances, (120, 160), (60, 80))
    assert detections["boxes"].tolist() == [[20.0, 10.0, 60.0, 90.0]]
    assert detections["labels"].tolist() == [1] and detections["scores"].tolist() == pytest.approx([0.9])
    mask = detections["masks"][0, 0].numpy() > 0.5
    assert mask.shape == (120, 160)
    # the lower half of the box, in image pixels
    assert boxes_from_masks(mask[None]).tolist() == [[20.0, 50.0, 60.0, 90.0]]
    assert not mask[:, :20].any() and not mask[:, 60:].any()


def test_eval_segment_with_detectron2_gives_the_same_report_keys(
    tiny_detectron2: Path, labelled_dir: Path, split: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from karyoflow.cli import main

    reports = {}
    for engine, weights in (("detectron2", ["--weights", str(tiny_detectron2)]), ("torchvision", [])):
        out = tmp_path / f"{engine}.json"
        command = ["eval", "segment", "--engine", engine, *weights, "--data", str(labelled_dir)]
        assert main([*command, "--split", str(split), "--json", str(out)]) == 0
        reports[engine] = json.loads(out.read_text())
    ours, default = reports["detectron2"], reports["torchvision"]
    assert ours["images"] == default["images"] == ["original_1", "original_4"]
    assert set(ours) == set(default) and set(ours["model"]) == set(default["model"])
    assert set(ours["bbox"]) == set(default["bbox"]) and set(ours["segm"]) == set(default["segm"])
    assert ours["model"]["architecture"] == "PointRend (detectron2)" and ours["model"]["backbone"] == "resnet18"
    assert ours["postprocess"] == default["postprocess"]
    assert default["bbox"]["AP50"] > 90.0  # the committed model, as a check that the two runs saw the same MCIs
    # weights of one engine under the other: one line, exit 2
    capsys.readouterr()
    wrong = ["eval", "segment", "--weights", str(tiny_detectron2), "--data", str(labelled_dir)]
    assert main([*wrong, "--split", str(split), "--json", str(tmp_path / "x.json")]) == 2
    assert "pass --engine detectron2" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_bench_and_run_take_the_detectron2_engine(
    tiny_detectron2: Path, labelled_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from karyoflow.cli import main

    capsys.readouterr()
    bench = ["bench", "segment", "--engine", "detectron2", "--weights", str(tiny_detectron2), "--repeats", "1"]
    assert main([*bench, "--data", str(labelled_dir)]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["engine"] == "detectron2" and figures["seconds_per_mci"] > 0
    run = ["run", str(labelled_dir / "mci" / "original_1.json"), "--out", str(tmp_path / "run"), "--quiet"]
    assert main([*run, "--engine", "detectron2", "--segment-weights", str(tiny_detectron2)]) == 0
    report = json.loads((tmp_path / "run" / "original_1.json").read_text())
    assert report["models"]["segmenter"]["architecture"] == "PointRend (detectron2)"
    assert report["models"]["segmenter"]["file"] == tiny_detectron2.name


def test_workers_segment_with_the_engine_of_the_settings(
    tiny_detectron2: Path, labelled_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infra.settings import get_settings
    from workers.runtime import _load_karyotyper, get_karyotyper

    monkeypatch.setenv("KARYO_SEGMENT_ENGINE", "detectron2")
    monkeypatch.setenv("KARYO_SEGMENTER_WEIGHTS", str(tiny_detectron2))
    monkeypatch.setenv("KARYO_DEVICE", "cpu")
    get_settings.cache_clear()
    _load_karyotyper.cache_clear()
    try:
        karyotyper = get_karyotyper()
        assert karyotyper.segment_engine == "detectron2"
        image = load_samples(labelled_dir, ["1"])[0].image
        detections = karyotyper.detect(image)
        assert type(karyotyper.segmenter).__name__ == "Detectron2Segmenter"
        assert detections.masks.shape[1:] == image.shape and np.all(detections.scores >= karyotyper.candidate_threshold)
        assert karyotyper.models["segmenter"]["architecture"] == "PointRend (detectron2)"
    finally:
        get_settings.cache_clear()
        _load_karyotyper.cache_clear()
