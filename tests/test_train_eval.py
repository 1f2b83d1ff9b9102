from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from karyoflow.classify.evaluate import classification_report
from karyoflow.classify.weights import load_weights
from karyoflow.cli import main
from karyoflow.labels import LABELS

REPO = Path(__file__).resolve().parents[1]


def karyo(*args: str) -> subprocess.CompletedProcess:
    """`karyo ARGS` run in this process (no interpreter and torch start per call): its exit code,
    stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
    return subprocess.CompletedProcess(["karyo", *args], code, out.getvalue(), err.getvalue())


def karyo_process(*args: str) -> subprocess.CompletedProcess:
    """`python -m karyoflow.cli ARGS` as its own process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "karyoflow.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


@pytest.mark.integration
def test_tiny_training_run_lowers_the_loss(tiny_weights: Path) -> None:
    model, meta = load_weights(tiny_weights)
    history = meta["history"]
    assert len(history) == 3
    assert history[-1]["train_ce"] < history[0]["train_ce"] - 0.1
    assert meta["straighten"] == "mask"
    state = torch.load(tiny_weights, weights_only=True)["state_dict"]
    assert {p.dtype for p in state.values() if p.is_floating_point()} == {torch.float16}


@pytest.mark.integration
def test_training_resumes_from_its_checkpoint(tiny_weights: Path, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed.pt"
    first = karyo(
        "train",
        "classify",
        "--data",
        str(data_dir),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--max-steps",
        "2",
        "--batch-size",
        "8",
        "--limit-cells",
        "1",
        "--no-val",
        "--split",
        str(REPO / "splits" / "bioimlab.json"),
    )
    assert first.returncode == 0, first.stderr
    assert out.with_suffix(".ckpt").is_file()
    again = karyo(
        "train",
        "classify",
        "--data",
        str(data_dir),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--limit-cells",
        "1",
        "--no-val",
        "--resume",
        "--split",
        str(REPO / "splits" / "bioimlab.json"),
    )
    assert again.returncode == 0, again.stderr
    assert "resumed from" in again.stdout
    _, meta = load_weights(out)
    assert [h["epoch"] for h in meta["history"]] == [1, 2]


@pytest.mark.integration
def test_fine_tuning_starts_from_the_weights_with_centres_at_the_class_means(
    tiny_weights: Path, data_dir: Path
) -> None:
    from karyoflow.classify.dataset import load_ici_tensors
    from karyoflow.classify.losses import CenterLoss
    from karyoflow.classify.model import ChrNet4
    from karyoflow.classify.preprocess import Preprocessing
    from karyoflow.classify.train import start_from_weights
    from karyoflow.weights_io import WeightsError

    trained, meta = load_weights(tiny_weights)
    preprocessing = Preprocessing.from_meta(meta)
    cells = load_ici_tensors(data_dir, ["6"], preprocessing)
    model = ChrNet4()
    centres = CenterLoss(24, model.feature_dim)
    start_from_weights(model, centres, tiny_weights, preprocessing, cells, torch.device("cpu"))
    for name, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[name], value.float()), name
    with torch.no_grad():
        features = model.forward_features(cells.images)
    for label in cells.targets.unique().tolist():
        expected = features[cells.targets == label].mean(0)
        assert torch.allclose(centres.centers[label], expected, atol=1e-4)
    absent = sorted(set(range(24)) - set(cells.targets.tolist()))
    assert all(float(centres.centers[label].abs().sum()) == 0.0 for label in absent)
    with pytest.raises(WeightsError, match="expects ICIs prepared as"):
        start_from_weights(
            ChrNet4(), centres, tiny_weights, Preprocessing("hough", 112, 56), cells, torch.device("cpu")
        )


@pytest.mark.integration
def test_eval_json_has_the_agreed_keys(tiny_weights: Path, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    result = karyo(
        "eval",
        "classify",
        "--data",
        str(data_dir),
        "--split",
        str(REPO / "splits" / "bioimlab.json"),
        "--subset",
        "val",
        "--weights",
        str(tiny_weights),
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    for key in ("accuracy", "macro_recall", "macro_precision", "n", "per_class", "confusion"):
        assert key in report
    assert set(report["per_class"]) == set(LABELS)
    confusion = np.array(report["confusion"])
    assert confusion.shape == (24, 24) and confusion.sum() == report["n"]
    assert report["n"] == 46 * report["n_cells"] and report["n_cells"] >= 10
    assert abs(np.trace(confusion) / report["n"] - report["accuracy"]) < 1e-9
    assert out.with_suffix(".confusion.png").stat().st_size > 10_000


@pytest.mark.unit
def test_classification_report_counts() -> None:
    y_true = np.array([0, 0, 1, 1, 23])
    y_pred = np.array([0, 1, 1, 1, 22])
    report = classification_report(y_true, y_pred)
    assert report["accuracy"] == 3 / 5
    assert report["per_class"]["1"] == {"recall": 0.5, "precision": 1.0, "support": 2, "predicted": 1}
    assert report["per_class"]["2"]["precision"] == 2 / 3
    assert report["per_class"]["Y"]["recall"] == 0.0
    # macro figures average the classes present in the truth (1, 2, Y)
    assert abs(report["macro_recall"] - (0.5 + 1.0 + 0.0) / 3) < 1e-12


@pytest.mark.integration
def test_cli_reports_bad_input_with_exit_code_2(tmp_path: Path, tiny_weights: Path, data_dir: Path) -> None:
    # the module entry point as its own process, then the same main in this one
    missing = karyo_process("eval", "classify", "--data", str(tmp_path / "nope"), "--json", str(tmp_path / "x.json"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    bad = karyo(
        "eval",
        "classify",
        "--data",
        str(data_dir),
        "--weights",
        str(junk),
        "--json",
        str(tmp_path / "y.json"),
    )
    assert bad.returncode == 2 and "not a weights file" in bad.stderr
    unknown = karyo("classify", "--data", str(data_dir), "--cases", "9999", "--weights", str(tiny_weights))
    assert unknown.returncode == 2 and "9999" in unknown.stderr
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "y.json").exists()


@pytest.mark.integration
def test_bench_reports_icis_per_second(tiny_weights: Path, data_dir: Path) -> None:
    result = karyo("bench", "classify", "--data", str(data_dir), "--weights", str(tiny_weights), "--repeats", "1")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["batch"] == 46 and figures["icis_per_s"] > 0


@pytest.mark.integration
def test_eval_with_the_assignment_respects_each_cells_capacities(tiny_weights: Path, data_dir: Path, tmp_path: Path):
    out = tmp_path / "eval.json"
    result = karyo(
        "eval", "classify", "--data", str(data_dir), "--cases", "9", "--weights", str(tiny_weights),
        "--assign", "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["assignment"] == "capacity" and 0 <= report["argmax_accuracy"] <= 1
    predicted = {label: figures["predicted"] for label, figures in report["per_class"].items()}
    assert all(predicted[str(k)] == 2 for k in range(1, 23))  # a 46-chromosome cell: two of each autosome
    assert predicted["X"] + predicted["Y"] == 2
