from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from karyoflow.data.bioimlab import (
    DataError,
    list_ici_cases,
    list_mcis,
    read_ici_case,
    read_mci,
    resolve_data_dir,
)
from karyoflow.data.split import LABELLED_JOINT_TEST_CELLS, make_split, read_split, write_split
from karyoflow.labels import LABELS

pytestmark = pytest.mark.unit


def test_ici_reader_reads_a_real_cell(data_dir: Path) -> None:
    records = read_ici_case(data_dir, "1")
    assert len(records) == 46
    counts = np.bincount([r.class_index for r in records], minlength=24)
    # a normal cell: two of each autosome; the sex chromosomes two together
    assert (counts[:22] == 2).all()
    assert counts[22] + counts[23] == 2
    image = records[0].load()
    assert image.dtype == np.uint8 and image.ndim == 2
    assert image.max() > 100 and image[0, 0] == 0  # bright chromosome on black (Q-band)


def test_every_cell_has_46_icis(data_dir: Path) -> None:
    cases = list_ici_cases(data_dir)
    assert len(cases) >= 100
    assert cases[:3] == ["1", "2", "3"]  # numeric order, not string order
    assert {len(read_ici_case(data_dir, c)) for c in cases[::10]} == {46}


def test_mci_reader_decodes_labelme_with_embedded_image(data_dir: Path) -> None:
    paths = list_mcis(data_dir)
    assert len(paths) >= 100
    mci = read_mci(data_dir / "mci" / "original_1.json")
    assert mci.image.shape == (576, 768)
    assert len(mci.polygons) >= 40
    assert all(p.shape[1] == 2 for p in mci.polygons)
    assert set(mci.labels) == {"chr"}


def test_labelled_mci_carries_classes(labelled_dir: Path) -> None:
    mci = read_mci(labelled_dir / "mci" / "original_1.json")
    assert set(mci.labels) <= set(LABELS) | {"chr"}
    assert sum(label != "chr" for label in mci.labels) >= 30


def test_bad_names_and_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        resolve_data_dir(tmp_path / "nope")
    with pytest.raises(DataError, match="no ici/ folder"):
        list_ici_cases(tmp_path)
    (tmp_path / "ici" / "5").mkdir(parents=True)
    (tmp_path / "ici" / "5" / "5_1a.bmp").write_bytes(b"")
    with pytest.raises(DataError, match="unexpected ICI file name"):
        read_ici_case(tmp_path, "5")
    bad = tmp_path / "original_3.json"
    bad.write_text(json.dumps({"shapes": []}))
    with pytest.raises(DataError, match="imageData"):
        read_mci(bad)


def test_split_is_by_cell_seeded_and_keeps_labelled_cells_out_of_training(data_dir: Path, tmp_path: Path) -> None:
    cases = list_ici_cases(data_dir)
    split = make_split(cases, n_val=16, seed=7)
    assert split == make_split(cases, n_val=16, seed=7)
    assert split["val"] != make_split(cases, n_val=16, seed=8)["val"]
    assert not set(split["train"]) & set(split["val"])
    assert set(split["train"]) | set(split["val"]) == set(cases)
    assert set(LABELLED_JOINT_TEST_CELLS) <= set(split["val"])
    write_split(split, tmp_path / "s.json")
    assert read_split(tmp_path / "s.json", "val") == split["val"]
    with pytest.raises(DataError, match="no subset"):
        read_split(tmp_path / "s.json", "test")


def test_committed_split_keeps_the_rule(data_dir: Path) -> None:
    split = read_split(Path(__file__).resolve().parents[1] / "splits" / "bioimlab.json")
    assert len(split["val"]) >= 10
    assert not set(split["train"]) & set(split["val"])
    assert set(LABELLED_JOINT_TEST_CELLS) <= set(split["val"])
