"""`karyo eval karyotype`'s scores of whole calls, on semi-synthetic cells with a known truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from karyoflow.data.bioimlab import read_mci
from karyoflow.data.synth import synthesize_folder
from karyoflow.joint_eval import evaluate_joint
from karyoflow.karyotype import karyotype_from_labels
from karyoflow.labels import LABEL_TO_INDEX
from karyoflow.pipeline import Chromosome, KaryotypeResult
from karyoflow.segment.dataset import sample_from_mci

pytestmark = pytest.mark.unit


def analyse_from_truth(drop: dict[str, int]):
    """An analyser that finds every true polygon with its true class, except that it misses
    the first `drop[case]` polygons of a cell: a segmenter that merged or missed them."""

    def analyse(mci) -> KaryotypeResult:
        sample = sample_from_mci(mci)
        masks = sample.masks.astype(bool)[drop.get(mci.case, 0) :]
        labels = sample.labels[drop.get(mci.case, 0) :]
        chromosomes = []
        for i, (mask, label) in enumerate(zip(masks, labels, strict=True)):
            ys, xs = np.nonzero(mask)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            chromosomes.append(
                Chromosome(
                    i + 1,
                    label,
                    LABEL_TO_INDEX[label] + 1,
                    1.0,
                    [(label, 1.0)],
                    label,
                    1.0,
                    box,
                    mask,
                    0.0,
                    np.zeros((2, 2), np.uint8),
                )
            )
        karyotype = karyotype_from_labels([LABEL_TO_INDEX[c.label] for c in chromosomes])
        return KaryotypeResult(mci.path.name, mci.image.shape[1], mci.image.shape[0], chromosomes, karyotype, {})

    return analyse


def test_eval_reports_exact_calls_sensitivity_per_change_and_count_error(labelled_dir: Path, tmp_path: Path) -> None:
    cells = ["1", "2", "3"]
    normal = synthesize_folder(labelled_dir, cells, tmp_path / "normal", seed=2)
    abnormal = synthesize_folder(labelled_dir, cells, tmp_path / "abnormal", seed=2, abnormal=True)
    assert [iscn for _, iscn in abnormal] == ["47,XX,+21", "47,XX,+18", "47,XY,+13"]
    # cell 2's normal picture misses one chromosome (a false loss); cell 3's trisomy 13 picture
    # misses one (called 46: the change is not seen)
    analyse = analyse_from_truth({"2": 1})
    report = evaluate_joint(analyse, [read_mci(p) for p, _ in normal], tmp_path / "normal")
    assert report["karyotype_accuracy"] == pytest.approx(200 / 3, abs=0.01)
    assert report["false_abnormal_rate"] == pytest.approx(100 / 3, abs=0.01)
    assert report["sensitivity"] is None and report["abnormal_called_rate"] is None
    assert report["count_error"] == {"-1": 1, "0": 2}

    mcis = [read_mci(p) for p, _ in abnormal]
    dropped_13 = next(i for i, label in enumerate(mcis[2].labels) if label == "13")
    mcis[2].polygons.insert(0, mcis[2].polygons.pop(dropped_13))
    mcis[2].labels.insert(0, mcis[2].labels.pop(dropped_13))
    report = evaluate_joint(analyse_from_truth({"3": 1}), mcis, tmp_path / "abnormal")
    assert report["karyotype_accuracy"] == pytest.approx(200 / 3, abs=0.01)
    assert report["sensitivity"] == pytest.approx(200 / 3, abs=0.01)
    assert report["abnormal_called_rate"] == pytest.approx(200 / 3, abs=0.01)
    assert report["false_abnormal_rate"] is None
    assert report["per_change"] == {
        "+13": {"n": 1, "exact": 0, "called_abnormal": 0},
        "+18": {"n": 1, "exact": 1, "called_abnormal": 1},
        "+21": {"n": 1, "exact": 1, "called_abnormal": 1},
    }
    assert report["count_error"] == {"-1": 1, "0": 2}
    assert report["karyotype_cells"] == {"with_truth": 3, "normal": 0, "abnormal": 3}
    assert [c["karyotype_true"] for c in report["cells"]] == ["47,XX,+21", "47,XX,+18", "47,XY,+13"]
    assert report["cells"][2]["karyotype"] == "46,XY"
