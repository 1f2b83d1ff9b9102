"""The G-band ICI layout, stains, the split by case and cell calls from ICIs (real G-band data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from karyoflow.cell_eval import call_cell, is_constitutional, score_cell_calls
from karyoflow.data.bioimlab import DataError, read_mci
from karyoflow.data.gband import patient_case, read_gband_cell
from karyoflow.data.icis import case_of_cell, ici_layout, layout_stain, list_ici_cells, read_ici_cell
from karyoflow.data.split import cell_change, make_case_split, make_split_for
from karyoflow.labels import LABEL_TO_INDEX, NUM_CLASSES
from karyoflow.stain import StainError, detect_cell_stain, detect_stain, resolve_stain, to_bright_on_dark

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[1]


def test_gband_layout_recognised(gband_dir: Path, data_dir: Path) -> None:
    assert ici_layout(gband_dir) == "gband" and layout_stain(gband_dir) == "g"
    assert ici_layout(data_dir) == "bioimlab" and layout_stain(data_dir) == "q"
    cells = list_ici_cells(gband_dir)
    assert len(cells) == 456
    records = read_ici_cell(gband_dir, "98000139.11")  # 47,XY,+21 in the labels
    assert len(records) == 47
    assert sum(r.class_index == LABEL_TO_INDEX["21"] for r in records) == 3
    assert {r.stain for r in records} == {"g"}
    assert case_of_cell("98000139.11", "gband") == "98000139" == patient_case("98000139.11")


def test_gband_records_load_bright_on_dark(gband_dir: Path) -> None:
    record = read_ici_cell(gband_dir, "97002023.12")[0]
    raw, working = record.load_raw(), record.load()
    assert detect_stain(raw) == "g" and detect_stain(working) == "q"
    assert np.array_equal(working, 255 - raw)
    assert np.median(np.concatenate([working[0], working[-1]])) == 0


def test_unclassified_fragment_left_out(gband_dir: Path) -> None:
    cell_dir = gband_dir / "ici" / "97002569.11"  # the one cell with an `other_*` fragment
    assert any(p.name.startswith("other") for p in cell_dir.iterdir())
    records = read_gband_cell(gband_dir, "97002569.11")
    assert len(records) == len([p for p in cell_dir.iterdir() if not p.name.startswith("other")])


def test_bad_gband_file_name_is_an_error(tmp_path: Path, gband_dir: Path) -> None:
    cell = tmp_path / "ici" / "1.1"
    cell.mkdir(parents=True)
    (cell / "1_0.tiff").write_bytes((gband_dir / "ici" / "97002023.12" / "1_0.tiff").read_bytes())
    (cell / "chromosome25_0.tiff").write_bytes(b"")
    with pytest.raises(DataError, match="unexpected ICI file name"):
        read_ici_cell(tmp_path, "1.1")


def test_stain_detection(gband_dir: Path, labelled_dir: Path) -> None:
    mci = read_mci(labelled_dir / "mci" / "original_1.json")
    assert detect_stain(mci.image) == "q"
    assert detect_stain(255 - mci.image) == "g"
    images = [r.load_raw() for r in read_ici_cell(gband_dir, "97002023.12")]
    assert detect_cell_stain(images) == "g"
    assert resolve_stain("auto", images) == "g" and resolve_stain("q", images) == "q"
    assert np.array_equal(to_bright_on_dark(images[0], "q"), images[0])
    with pytest.raises(StainError):
        resolve_stain("c", images)


def test_case_split_keeps_cases_whole_and_validates_every_change(gband_dir: Path, tmp_path: Path) -> None:
    split = make_split_for(gband_dir)
    assert split["unit"] == "case"
    train_cases = {patient_case(c) for c in split["train"]}
    val_cases = {patient_case(c) for c in split["val"]}
    assert not train_cases & val_cases
    assert len(split["train"]) + len(split["val"]) == 456
    assert 0.15 < len(val_cases) / (len(train_cases) + len(val_cases)) < 0.25
    val_changes = {cell_change(read_ici_cell(gband_dir, c)) for c in split["val"]}
    assert {"+21", "+18", "XXY", "XXX", "X"} <= val_changes
    assert make_split_for(gband_dir) == split  # seeded
    committed = REPO / "splits" / "gband.json"
    import json

    assert json.loads(committed.read_text()) == split


def test_case_split_strata_on_constructed_cases() -> None:
    changes = {f"{case}.{cell}": "normal" for case in range(20) for cell in range(2)}
    changes.update({"90.1": "+21", "90.2": "+21", "91.1": "XXX"})
    case_of = {cell: cell.split(".")[0] for cell in changes}
    split = make_case_split(changes, case_of, val_fraction=0.2, seed=1)
    assert {"90.1", "90.2", "91.1"} <= set(split["val"])  # one-case abnormal strata go to validation
    assert sum(c.endswith(".1") for c in split["val"] if c[:2] not in ("90", "91")) == 4
    with pytest.raises(DataError):
        make_case_split(changes, case_of, val_fraction=1.0)


def _cell_probabilities(labels: list[int], rng: np.random.Generator, swap: tuple[int, int] | None = None) -> np.ndarray:
    probs = rng.dirichlet(np.full(NUM_CLASSES, 0.2), size=len(labels)) * 0.2
    probs[np.arange(len(labels)), labels] += 0.8
    if swap is not None:  # one ICI looks most like another class, less surely than its true one elsewhere
        i, k = swap
        probs[i] = 0.0
        probs[i, k], probs[i, labels[i]] = 0.55, 0.45
    return probs / probs.sum(1, keepdims=True)


def test_cell_calls_scored(gband_dir: Path) -> None:
    rng = np.random.default_rng(0)
    trisomy = read_ici_cell(gband_dir, "98000139.11")
    normal = read_ici_cell(gband_dir, "97002023.16")
    t_labels = [r.class_index for r in trisomy]
    n_labels = [r.class_index for r in normal]
    calls = [
        call_cell("98000139.11", "98000139", trisomy, _cell_probabilities(t_labels, rng)),
        # one 4 looks like a 5: argmax calls 46,XX,-4,+5, the assignment puts it back
        call_cell("97002023.16", "97002023", normal, _cell_probabilities(n_labels, rng, (n_labels.index(3), 4))),
    ]
    assert calls[0].called == calls[0].truth == "47,XY,+21"
    assert calls[1].argmax_called != calls[1].truth and calls[1].called == calls[1].truth
    report = score_cell_calls(calls)
    assert report["karyotype_accuracy"] == 1.0 and report["sensitivity"] == 1.0
    assert report["argmax"]["false_abnormal_rate"] == 1.0
    assert report["ici_accuracy_assigned"] == 1.0 > report["ici_accuracy_argmax"]
    assert report["constitutional"] == [
        {"cell": "98000139.11", "truth": "47,XY,+21", "called": "47,XY,+21", "exact": True}
    ]
    assert is_constitutional("45,X") and not is_constitutional("45,XX,-20")
