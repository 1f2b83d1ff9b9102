"""`karyo data synth --abnormal` and `karyo eval karyotype --json` end to end, with the committed
models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from karyoflow.cli import main
from karyoflow.data.bioimlab import list_mcis, read_mci

pytestmark = pytest.mark.integration


def test_abnormal_synth_then_eval_reports_the_call_scores(labelled_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "abnormal"
    args = ["data", "synth", "--data", str(labelled_dir), "--cases", "1", "3", "--abnormal", "--seed", "3"]
    assert main([*args, "--out", str(out)]) == 0
    truths = [read_mci(path).karyotype for path in list_mcis(out)]
    assert truths == ["47,XX,+21", "47,XY,+18"]
    report_path = tmp_path / "eval.json"
    assert main(["eval", "karyotype", "--data", str(out), "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["karyotype_cells"] == {"with_truth": 2, "normal": 0, "abnormal": 2}
    for key in ("karyotype_accuracy", "sensitivity", "abnormal_called_rate"):
        assert 0.0 <= report[key] <= 100.0
    assert report["false_abnormal_rate"] is None
    assert set(report["per_change"]) == {"+18", "+21"}
    assert sum(report["count_error"].values()) == 2
    assert [c["karyotype_true"] for c in report["cells"]] == truths
    assert "sensitivity" in capsys.readouterr().out


def test_synth_refuses_an_abnormal_set_of_one_cell(labelled_dir: Path, tmp_path: Path, capsys) -> None:
    args = ["data", "synth", "--data", str(labelled_dir), "--cases", "1", "--abnormal", "--out", str(tmp_path / "x")]
    assert main(args) == 2
    assert "at least two cells" in capsys.readouterr().err
