"""The committed default weights: they load with no --weights and classify held-out cells."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from karyoflow.classify.weights import sha256_of
from karyoflow.resources import default_classifier_weights
from tests.test_train_eval import karyo

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def test_model_card_matches_the_committed_weights() -> None:
    card = (REPO / "models" / "chrnet4.md").read_text()
    assert sha256_of(default_classifier_weights()) in card
    assert default_classifier_weights().stat().st_size < 40 * 1024 * 1024  # fp16


def test_default_weights_classify_the_labelled_cells(labelled_dir: Path, tmp_path: Path) -> None:
    # bioimlab-labelled holds validation cells only (never trained on): an honest check
    out = tmp_path / "labelled.json"
    result = karyo("eval", "classify", "--data", str(labelled_dir), "--json", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["n_cells"] == 8 and report["n"] == 368
    assert report["accuracy"] > 0.85
