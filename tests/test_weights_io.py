"""Weights files: fp16 on disk, fp32 when loaded, and their metadata readable alone (what the CLI
reads to pick the stain a model serves before loading it once)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from karyoflow.weights_io import WeightsError, load_checked, read_meta, save_fp16

pytestmark = pytest.mark.unit
FORMAT = "karyoflow-test/1"


def test_metadata_read_alone_is_the_loaded_files(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "w.pt"
    save_fp16(model, path, FORMAT, {"stain": "g", "epochs": 4})
    state, meta = load_checked(path, FORMAT, "train")
    assert read_meta(path, FORMAT, "train") == meta == {"stain": "g", "epochs": 4}
    assert state["weight"].dtype == torch.float32
    assert torch.allclose(state["weight"], model.weight.detach().half().float())


def test_metadata_of_a_foreign_or_missing_file_is_a_weights_error(tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    save_fp16(torch.nn.Linear(1, 1), other, "karyoflow-other/1", {})
    with pytest.raises(WeightsError, match="is not karyoflow-test/1 weights"):
        read_meta(other, FORMAT, "train")
    with pytest.raises(WeightsError, match="no weights at"):
        read_meta(tmp_path / "missing.pt", FORMAT, "karyo train classify")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a weights file")
    with pytest.raises(WeightsError, match="is not a weights file"):
        read_meta(garbage, FORMAT, "train")
