"""G-band cells through the pipeline, the command line and the API: stains routed to their own
classifier, dark-on-light karyograms, cells given as their cut-out chromosomes. Uses a G-band
ChrNet4 trained here for a few steps (real weights, useless accuracy): these tests check the
plumbing; the committed model's accuracy is measured by `karyo eval`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from karyoflow.data.icis import read_ici_cell
from karyoflow.labels import LABELS
from karyoflow.report import build_report, karyogram_image, validate_report
from karyoflow.stain import detect_stain
from tests.helpers import gband_metaphase

pytestmark = pytest.mark.integration
GBAND_CELL = "98000139.11"  # 47,XY,+21 in the labels


@pytest.fixture(scope="module")
def tiny_gband_weights(tmp_path_factory: pytest.TempPathFactory, gband_dir: Path) -> Path:
    import torch

    from karyoflow.classify.train import TrainConfig, train_classifier

    out = tmp_path_factory.mktemp("gband-weights") / "tiny-gband.pt"
    config = TrainConfig(epochs=1, batch_size=16, max_steps=3, train_cases=["97002023.12", "97002023.16"])
    meta = train_classifier(gband_dir, config, out, torch.device("cpu"), log=lambda *_: None)
    assert meta["stain"] == "g"
    return out


@pytest.fixture(scope="module")
def gband_mci(gband_dir: Path) -> np.ndarray:
    return gband_metaphase(gband_dir, GBAND_CELL, seed=7)


def test_brightfield_metaphase_looks_g_banded(gband_mci: np.ndarray) -> None:
    assert detect_stain(gband_mci) == "g"
    assert np.median(gband_mci) > 200 and np.percentile(gband_mci, 0.5) < 80  # bright field, dark bands


def test_karyotyper_routes_each_stain_to_its_classifier(gband_mci: np.ndarray, tiny_gband_weights: Path) -> None:
    from karyoflow.pipeline import Karyotyper

    karyotyper = Karyotyper(device="cpu", classifier_weights_by_stain={"g": tiny_gband_weights})
    as_g = karyotyper.analyse(gband_mci, "g.png")
    as_q = karyotyper.analyse(255 - gband_mci, "q.png")  # the same picture in fluorescence polarity
    assert (as_g.stain, as_q.stain) == ("g", "q")
    assert as_g.models["classifier"]["file"] == tiny_gband_weights.name
    assert as_g.models["classifier"]["stain"] == "g" and as_q.models["classifier"]["stain"] == "q"
    # one working representation: the segmenter sees the same image in both stains
    assert np.array_equal(karyotyper.working_image(gband_mci)[0], karyotyper.working_image(255 - gband_mci)[0])
    assert len(as_g.chromosomes) >= 40
    report = build_report(as_g)
    validate_report(report)
    assert report["stain"] == "g" and report["source"] == "mci"
    page = np.asarray(karyogram_image(as_g).convert("L"))
    dark_page = np.asarray(karyogram_image(as_q).convert("L"))
    assert np.median(page) > 200 and np.median(dark_page) < 60  # G-band drawn dark on light
    forced = karyotyper.analyse(gband_mci, "forced.png", stain="q")
    assert forced.stain == "q"  # an explicit stain is obeyed, not detected


def test_missing_stain_model_is_a_clear_error(gband_mci: np.ndarray, tmp_path: Path) -> None:
    from karyoflow.pipeline import Karyotyper, MissingModelError

    karyotyper = Karyotyper(device="cpu", classifier_weights_by_stain={"g": tmp_path / "none.pt"})
    with pytest.raises(MissingModelError, match="no G-band classifier"):
        karyotyper.analyse(gband_mci)


def _karyo(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "karyoflow.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def test_run_icis_writes_karyograms_of_cut_out_cells(
    gband_dir: Path, data_dir: Path, tiny_gband_weights: Path, tmp_path: Path
) -> None:
    gband_cell, qband_cell = gband_dir / "ici" / GBAND_CELL, data_dir / "ici" / "1"
    done = _karyo(
        "run", "--icis", str(gband_cell), "--classify-weights", str(tiny_gband_weights), "--out", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / f"{GBAND_CELL}.json").read_text())
    validate_report(report)
    assert report["source"] == "icis" and report["stain"] == "g" and report["chromosome_count"] == 47
    assert "width" not in report and all("bbox" not in c for c in report["chromosomes"])
    assert {c["file"] for c in report["chromosomes"]} == {p.name for p in gband_cell.iterdir()}
    with Image.open(tmp_path / f"{GBAND_CELL}.png") as karyogram:
        assert np.median(np.asarray(karyogram.convert("L"))) > 200
    done = _karyo("run", "--icis", str(qband_cell), "--out", str(tmp_path))  # the committed Q-band model
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "1.json").read_text())
    assert report["stain"] == "q" and report["karyotype"] == "46,XX" and report["chromosome_count"] == 46


def test_run_icis_bad_input_exits_2(gband_dir: Path, tmp_path: Path) -> None:
    no_model = _karyo(
        "run", "--icis", str(gband_dir / "ici" / GBAND_CELL), "--out", str(tmp_path / "out"),
        env={"KARYO_MODELS_DIR": str(tmp_path)},
    )  # fmt: skip
    assert no_model.returncode == 2 and "no G-band classifier" in no_model.stderr
    assert len(no_model.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    not_a_folder = _karyo("run", "--icis", str(gband_dir / "README.md"), "--out", str(tmp_path / "out"))
    assert not_a_folder.returncode == 2 and "give folders" in not_a_folder.stderr


def test_ici_endpoint_takes_a_gband_cell(gband_dir: Path, tiny_gband_weights: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from api.deps import get_classifier
    from api.main import app
    from db import session as db_session
    from db.admin import create_clinic
    from db.migrate import upgrade
    from infra.settings import get_settings

    def clear() -> None:
        get_settings.cache_clear()
        get_classifier.cache_clear()
        db_session.get_sessionmaker.cache_clear()
        db_session.get_engine.cache_clear()

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KARYO_DATABASE_URL", f"sqlite:///{tmp_path / 'karyoflow.db'}")
        patch.setenv("KARYO_CLASSIFIER_WEIGHTS_GBAND", str(tiny_gband_weights))
        clear()
        try:
            upgrade()
            _clinic, key = create_clinic("G-band lab")
            files = [
                ("files", (p.name, p.read_bytes(), "image/tiff"))
                for p in sorted((gband_dir / "ici" / GBAND_CELL).iterdir())
            ]
            client = TestClient(app)
            answer = client.post("/v1/icis/classify", files=files, headers={"X-API-Key": key})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["stain"] == "g" and body["n"] == 47 and len(body["icis"]) == 47
            assert body["karyotype"].startswith("47,") and isinstance(body["abnormal"], bool)
            assert {i["assigned_label"] for i in body["icis"]} <= set(LABELS)
            wrong = client.post("/v1/icis/classify", files=files, data={"stain": "x"}, headers={"X-API-Key": key})
            assert wrong.status_code == 422
        finally:
            db_session.get_engine().dispose()
            clear()


def test_gband_synth_and_karyo_run_on_a_gband_metaphase(
    gband_dir: Path, tiny_gband_weights: Path, tmp_path: Path
) -> None:
    """`karyo data synth` on the G-band layout writes brightfield metaphases whose labels and
    truth match the cells; `karyo run` on one detects G-band and writes a karyogram and report."""
    from karyoflow.data.bioimlab import read_mci
    from karyoflow.karyotype import karyotype_from_labels

    cells = ["97002069.20", GBAND_CELL]
    done = _karyo("data", "synth", "--data", str(gband_dir), "--cases", *cells, "--out", str(tmp_path / "synth"))
    assert done.returncode == 0, done.stderr
    mci = read_mci(tmp_path / "synth" / "mci" / f"original_{GBAND_CELL}a.json")
    assert mci.case == GBAND_CELL and detect_stain(mci.image) == "g"
    truth = karyotype_from_labels([r.class_index for r in read_ici_cell(gband_dir, GBAND_CELL)]).iscn
    assert sorted(mci.labels) == sorted(LABELS[r.class_index] for r in read_ici_cell(gband_dir, GBAND_CELL))
    assert truth == "47,XY,+21" == mci.karyotype
    done = _karyo("run", str(mci.path), "--classify-weights", str(tiny_gband_weights), "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "run" / f"original_{GBAND_CELL}a.json").read_text())
    validate_report(report)
    assert report["stain"] == "g" and report["source"] == "mci" and report["chromosome_count"] >= 40
    with Image.open(tmp_path / "run" / f"original_{GBAND_CELL}a.png") as karyogram:
        assert np.median(np.asarray(karyogram.convert("L"))) > 200


def test_a_gband_segmenter_records_its_stain_and_segments_gband_images(
    gband_dir: Path, tiny_gband_weights: Path, tmp_path: Path
) -> None:
    """ChrRender trained on brightfield metaphases records stain g; `karyo run --segment-weights`
    then uses it for G-band images, and the report says so."""
    from karyoflow.data.bioimlab import read_mci
    from karyoflow.segment.engines import segmenter_stain

    cell = "97002069.20"
    done = _karyo("data", "synth", "--data", str(gband_dir), "--cases", cell, "--out", str(tmp_path / "synth"))
    assert done.returncode == 0, done.stderr
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [cell], "val": []}))
    weights = tmp_path / "chrrender-gband.pt"
    done = _karyo(
        "train", "segment", "--data", str(tmp_path / "synth"), "--split", str(split), "--steps", "2",
        "--batch-size", "1", "--out", str(weights),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert segmenter_stain(weights) == "g"
    mci = read_mci(tmp_path / "synth" / "mci" / f"original_{cell}a.json")
    done = _karyo(
        "run", str(mci.path), "--segment-weights", str(weights), "--classify-weights", str(tiny_gband_weights),
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "run" / f"original_{cell}a.json").read_text())
    assert report["stain"] == "g"
    assert report["models"]["segmenter"]["file"] == weights.name
    assert report["models"]["segmenter"]["stain"] == "g"
