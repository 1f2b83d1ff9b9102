"""The segmentation engines' shared interface, without running detectron2: engine choice, the
error when detectron2 is missing, weights of the wrong engine, the detectron2 schedule's
milestones, the options only one engine has, and the COCO images written for detectron2."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import pytest
import torch

from karyoflow.segment.dataset import load_samples, to_coco, write_coco_images
from karyoflow.segment.detectron2_train import lr_milestones
from karyoflow.segment.engines import ENGINES, check_engine, load_segmenter
from karyoflow.weights_io import WeightsError

pytestmark = pytest.mark.unit


def test_engines_are_torchvision_and_detectron2_and_others_are_refused() -> None:
    assert ENGINES == ("torchvision", "detectron2")
    with pytest.raises(ValueError, match="choose from torchvision, detectron2"):
        check_engine("mmdet")


def test_without_detectron2_the_engine_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from karyoflow.segment import detectron2_backend

    # None in sys.modules makes `import detectron2...` raise ImportError, installed or not
    for name in ("detectron2", "detectron2.config", "detectron2.projects"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(detectron2_backend.BackendUnavailable, match="make detectron2"):
        detectron2_backend.pointrend_config()


@pytest.mark.parametrize(
    "weights_format, asked, other",
    [
        ("karyoflow-detectron2-pointrend/1", "torchvision", "detectron2"),
        ("karyoflow-chrrender/1", "detectron2", "torchvision"),
    ],
)
def test_weights_of_the_other_engine_name_the_engine_to_use(
    tmp_path: Path, weights_format: str, asked: str, other: str
) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"format": weights_format, "meta": {}, "state_dict": {}}, path)
    with pytest.raises(WeightsError, match=f"holds {other} weights, not {asked}: pass --engine {other}"):
        load_segmenter(path, "cpu", asked)


def test_a_file_that_is_no_weights_is_a_weights_error_for_either_engine(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("not weights")
    for engine in ENGINES:
        with pytest.raises(WeightsError, match="is not a weights file"):
            load_segmenter(path, "cpu", engine)


@pytest.mark.parametrize(
    "iterations, milestones",
    [(1, ()), (2, (1,)), (3, (2,)), (4, (3,)), (10, (7, 9)), (20, (15, 18)), (20000, (15000, 18000))],
)
def test_lr_milestones_are_increasing_and_inside_the_run_however_short(iterations: int, milestones: tuple) -> None:
    assert lr_milestones(iterations) == milestones


@pytest.mark.parametrize(
    "options, refused",
    [
        (["--engine", "detectron2", "--plain-mask-rcnn"], "--plain-mask-rcnn"),
        (["--engine", "detectron2", "--augment", "dihedral"], "--augment dihedral"),
        (["--engine", "detectron2", "--max-minutes", "5"], "--max-minutes"),
        (["--engine", "detectron2", "--backbone", "mobilenet_v3"], "--backbone mobilenet_v3"),
        (["--workers", "2"], "--workers"),
        (["--image-size", "600", "500"], "--image-size"),
        (["--steps", "0"], "--steps"),
    ],
)
def test_train_segment_refuses_options_the_engine_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture, options: list[str], refused: str
) -> None:
    from karyoflow.cli import main

    out = tmp_path / "seg.pt"
    assert main(["train", "segment", "--data", str(tmp_path), "--out", str(out), *options]) == 2
    error = capsys.readouterr().err
    assert error.startswith("karyo: error: ") and refused in error and error.count("\n") == 1
    assert not out.exists()


def test_coco_images_are_the_working_images_under_the_exports_names(labelled_dir: Path, tmp_path: Path) -> None:
    samples = load_samples(labelled_dir, ["1", "2"])
    twice = [samples[0], samples[1], samples[0]]  # the same name twice (two folders' MCIs)
    coco = to_coco(twice)
    names = [image["file_name"] for image in coco["images"]]
    assert names == ["original_1-1.png", "original_2.png", "original_1-3.png"]
    write_coco_images(twice, coco, tmp_path / "images")
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(names)
    for sample, name in zip(twice, names, strict=True):
        read = cv2.imread(str(tmp_path / "images" / name), cv2.IMREAD_GRAYSCALE)
        assert (read == sample.image).all()  # lossless: the engine sees what the default engine sees
    assert [(image["height"], image["width"]) for image in coco["images"]] == [s.image.shape for s in twice]
