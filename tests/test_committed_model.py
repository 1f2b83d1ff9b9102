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


def test_every_committed_model_has_a_card_with_its_sha256_and_the_budget_holds() -> None:
    weights = sorted((REPO / "models").glob("*.pt"))
    assert default_classifier_weights() in weights
    for path in weights:
        card = path.with_suffix(".md")
        assert card.is_file(), f"{path.name} has no model card"
        assert sha256_of(path) in card.read_text(), f"{card.name} does not name {path.name}'s sha256"
        assert path.stat().st_size < 40 * 1024 * 1024, path.name  # fp16
    assert sum(path.stat().st_size for path in (REPO / "models").iterdir()) <= 160 * 1024 * 1024


def test_default_weights_classify_the_labelled_cells(labelled_dir: Path, tmp_path: Path) -> None:
    # bioimlab-labelled holds validation cells only (never trained on): an honest check
    out = tmp_path / "labelled.json"
    result = karyo("eval", "classify", "--data", str(labelled_dir), "--json", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["n_cells"] == 8 and report["n"] == 368
    assert report["accuracy"] > 0.85
