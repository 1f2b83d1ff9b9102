"""Semi-synthetic abnormal cells: the true karyotype written into each file is what is painted."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from karyoflow.data.bioimlab import list_mcis, load_grey, read_ici_case, read_mci
from karyoflow.data.synth import ABNORMAL_CYCLE, abnormal_cell, synthesize_folder
from karyoflow.karyotype_metrics import change_of, counts_from_iscn
from karyoflow.labels import LABELS
from karyoflow.segment.dataset import polygon_mask

pytestmark = pytest.mark.unit

CELLS = ["1", "2", "3", "4", "7", "8", "106", "107"]
MALE_CELLS = {"3", "106", "107"}


def test_every_change_of_the_cycle_is_painted_as_its_truth_says(labelled_dir: Path, tmp_path: Path) -> None:
    written = synthesize_folder(labelled_dir, CELLS, tmp_path, per_cell=2, seed=4, abnormal=True)
    assert len(written) == 16 and len(list_mcis(tmp_path)) == 16
    seen = set()
    for position, (path, iscn) in enumerate(written):
        mci = read_mci(path)
        assert mci.karyotype == iscn and mci.case == path.stem.removeprefix("original_")[:-1]
        painted = Counter(mci.labels)
        assert {label: painted.get(label, 0) for label in LABELS} == counts_from_iscn(iscn), (path.name, iscn)
        change = ABNORMAL_CYCLE[position % len(ABNORMAL_CYCLE)]
        # +Y on a female cell makes 47,XXY, which ISCN counts as a gained X
        female = mci.case not in MALE_CELLS
        assert change_of(iscn) == ("+X" if change == "+Y" and female else change), (path.name, iscn)
        seen.add(change_of(iscn))
        # every polygon covers painted pixels (the background is ~1 grey level)
        for polygon in mci.polygons:
            assert mci.image[polygon_mask(polygon, *mci.image.shape).astype(bool)].mean() > 15
    assert {"+21", "+18", "+13", "+X", "-X", "+8", "-7", "+12"} <= seen
    assert {iscn for _, iscn in written} >= {"45,X", "47,XXY", "47,XX,+21"}


def test_a_gain_is_another_cells_chromosome_and_a_loss_drops_one(labelled_dir: Path) -> None:
    icis = [(LABELS[r.class_index], load_grey(r.path)) for r in read_ici_case(labelled_dir, "3")]  # 46,XY
    donor = [load_grey(r.path) for r in read_ici_case(labelled_dir, "2") if LABELS[r.class_index] == "21"]
    rng = np.random.default_rng(0)
    gained, iscn = abnormal_cell(icis, "+21", {"21": donor}, rng)
    assert iscn == "47,XY,+21" and len(gained) == 47
    assert any(added is gained[-1][1] for added in donor)
    assert not any(gained[-1][1] is image for _, image in icis)
    lost, iscn = abnormal_cell(icis, "-X", {}, rng)
    assert iscn == "45,X" and [label for label, _ in lost].count("Y") == 0
    lost, iscn = abnormal_cell(icis, "-7", {}, rng)
    assert iscn == "45,XY,-7" and [label for label, _ in lost].count("7") == 1
    with pytest.raises(ValueError, match="no ICI of class 13"):
        abnormal_cell(icis, "+13", {}, rng)
    with pytest.raises(ValueError, match="numerical change"):
        abnormal_cell(icis, "t(9;22)", {}, rng)
