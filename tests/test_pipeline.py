"""The whole pipeline on real and semi-synthetic MCIs with the committed models."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from karyoflow.cli import main
from karyoflow.data.bioimlab import load_grey, read_ici_case, read_mci
from karyoflow.data.synth import synthesize_mci, write_labelme
from karyoflow.labels import LABELS
from karyoflow.pipeline import Karyotyper, cut_out
from karyoflow.report import build_report, render_outputs, validate_report
from karyoflow.segment.dataset import polygon_mask


def cell_icis(data_dir: Path, case: str) -> list[tuple[str, np.ndarray]]:
    return [(LABELS[r.class_index], load_grey(r.path)) for r in read_ici_case(data_dir, case)]


@pytest.mark.unit
def test_synthesizer_polygons_match_its_masks(labelled_dir: Path, tmp_path: Path) -> None:
    icis = cell_icis(labelled_dir, "2")
    mci = synthesize_mci(icis, np.random.default_rng(3), touching=0.3, overlapping=0.2)
    assert mci.image.shape == (576, 768) and mci.image.dtype == np.uint8
    assert sorted(mci.labels) == sorted(label for label, _ in icis)
    assert {"touching", "overlapping"} & set(mci.placement)
    for mask, polygon in zip(mci.masks, mci.polygons, strict=True):
        drawn = polygon_mask(polygon, *mask.shape)
        iou = (drawn & mask).sum() / (drawn | mask).sum()
        assert iou > 0.85, iou
        assert mci.image[mask].mean() > 30  # the chromosome was painted where its mask says
    # written as labelme and read back by the project's own reader
    path = tmp_path / "mci" / "original_2a.json"
    write_labelme(mci, path)
    back = read_mci(path)
    assert np.array_equal(back.image, mci.image)
    assert back.labels == mci.labels and len(back.polygons) == 46


@pytest.mark.unit
def test_cut_out_keeps_only_the_mask() -> None:
    image = np.full((20, 30), 200, np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[5:10, 8:12] = True
    ici, box = cut_out(image, mask, pad=2)
    assert box == (8, 5, 12, 10)
    assert ici.shape == (9, 8)
    assert (ici > 0).sum() == mask.sum()


@pytest.mark.integration
def test_real_mci_report_follows_the_schema(karyotyper: Karyotyper, labelled_dir: Path) -> None:
    mci = read_mci(labelled_dir / "mci" / "original_107a.json")
    result = karyotyper.analyse(mci.image, mci.path.name)
    report, png = render_outputs(result)
    validate_report(report)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert 40 <= report["chromosome_count"] <= 52
    assert report["karyotype"].startswith(f"{report['chromosome_count']},")
    assert set(report["timings_ms"]) >= {"segment", "straighten", "classify", "assemble"}
    chromosome = report["chromosomes"][0]
    decoded = mask_utils.decode({"size": chromosome["mask"]["size"], "counts": chromosome["mask"]["counts"]})
    ys, xs = np.nonzero(decoded)
    assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == chromosome["bbox"]
    broken = json.loads(json.dumps(report))
    broken["chromosomes"][0]["label"] = "25"
    with pytest.raises(jsonschema.ValidationError):
        validate_report(broken)
    del broken["karyotype"]
    with pytest.raises(jsonschema.ValidationError):
        validate_report(broken)


@pytest.mark.integration
def test_segment_tta_finds_the_same_chromosomes(karyotyper: Karyotyper, labelled_dir: Path) -> None:
    from karyoflow.segment.evaluate import mask_iou_matrix, match_instances

    mci = read_mci(labelled_dir / "mci" / "original_107a.json")
    mirrored = Karyotyper(device="cpu", segment_tta=True)
    assert mirrored.models["segment_tta"] is True and karyotyper.models["segment_tta"] is False
    single, fused = karyotyper.detect(mci.image), mirrored.detect(mci.image)
    assert abs(len(fused.scores) - len(single.scores)) <= 3
    pairs = match_instances(mask_iou_matrix(single.masks, fused.masks), 0.5)
    assert len(pairs) >= 0.9 * len(single.scores)


@pytest.mark.integration
def test_a_pasted_second_copy_of_21_is_a_gain(karyotyper: Karyotyper, labelled_dir: Path) -> None:
    """Cell 2 (never trained on): its 46 ICIs on a clean synthetic metaphase, then the same cell
    with one chromosome 21 pasted in a second time."""
    icis = cell_icis(labelled_dir, "2")
    normal = synthesize_mci(icis, np.random.default_rng(11), touching=0.0, overlapping=0.0)
    twenty_one = next(image for label, image in icis if label == "21")
    trisomic = synthesize_mci([*icis, ("21", twenty_one)], np.random.default_rng(11), touching=0.0, overlapping=0.0)
    normal_report = build_report(karyotyper.analyse(normal.image, "normal"))
    trisomic_report = build_report(karyotyper.analyse(trisomic.image, "trisomic"))
    assert {"type": "gain", "chromosome": "21"} in trisomic_report["abnormalities"]
    assert "+21" in trisomic_report["karyotype"]
    assert {"type": "gain", "chromosome": "21"} not in normal_report["abnormalities"]


@pytest.mark.integration
def test_karyo_run_writes_karyograms_and_reports(labelled_dir: Path, tmp_path: Path, capsys) -> None:
    inputs = [labelled_dir / "mci" / "original_3.json", labelled_dir / "mci" / "original_4.json"]
    out = tmp_path / "out"
    assert main(["run", *map(str, inputs), "--out", str(out), "--quiet"]) == 0
    for name in ("original_3", "original_4"):
        report = json.loads((out / f"{name}.json").read_text())
        validate_report(report)
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "original_3.json" in capsys.readouterr().out
    assert not list(out.glob("*.tmp"))


@pytest.mark.unit
def test_karyo_run_refuses_bad_input_and_writes_nothing(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main(["run", str(bad), "--out", str(out)]) == 2
    assert "cannot read the image" in capsys.readouterr().err
    assert not out.exists()
    assert main(["run", str(tmp_path / "missing.png"), "--out", str(out)]) == 2
    assert main(["run", str(tmp_path / "notes.txt"), "--out", str(out)]) == 2


@pytest.mark.integration
def test_eval_karyotype_scores_a_labelled_mci(labelled_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "mci").mkdir(parents=True)
    (data / "mci" / "original_107a.json").symlink_to(labelled_dir / "mci" / "original_107a.json")
    (data / "ici").mkdir()
    (data / "ici" / "107").symlink_to(labelled_dir / "ici" / "107")
    out = tmp_path / "joint.json"
    assert main(["eval", "karyotype", "--data", str(data), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for key in ("fka", "precision", "recall", "oca", "table3", "cells", "karyotype_accuracy", "false_abnormal_rate"):
        assert key in report
    assert report["n_images"] == 1 and report["cells"][0]["karyotype_true"] == "46,XY"
    assert report["fka"] > 80  # the committed models on a real cell never trained on
    assert sum(report["table3"].values()) == 1
    labels = report["confusion"]["labels"]
    assert labels[-1] == "BG" and len(report["confusion"]["matrix"]) == 25


@pytest.mark.integration
def test_an_image_without_chromosomes_gives_an_empty_valid_report(karyotyper: Karyotyper) -> None:
    report, png = render_outputs(karyotyper.analyse(np.zeros((576, 768), np.uint8), "black"))
    validate_report(report)
    assert report["chromosome_count"] == 0 and report["chromosomes"] == []
    assert report["karyotype"].startswith("0,-")
    assert png[:4] == b"\x89PNG"
