"""A reviewer's corrections of one metaphase (karyoflow.review): relabel, delete, split, merge,
the call they give and the reviewed report."""

from __future__ import annotations

import numpy as np
import pytest

from karyoflow.report import mask_rle, validate_report
from karyoflow.review import (
    Delete,
    EditError,
    Geometry,
    MergeTwo,
    Relabel,
    ReviewedChromosome,
    SplitInTwo,
    apply_edit,
    mask_from_rle,
    metaphase_karyotype,
    outline,
    reviewed_report,
    split_mask,
)

pytestmark = pytest.mark.unit

LABELS_46 = [str(k) for k in range(1, 23) for _ in range(2)] + ["X", "X"]


def _cell() -> list[ReviewedChromosome]:
    return [ReviewedChromosome(n, label, 0.9, (0, 0, 1, 1)) for n, label in enumerate(LABELS_46, start=1)]


def _geometry() -> tuple[Geometry, np.ndarray, np.ndarray]:
    """A 120 x 160 metaphase with two bright bars touching end to end (chromosome 1, to split)
    and two separate halves of one bar (chromosomes 2 and 3, to merge)."""
    working = np.zeros((120, 160), np.uint8)
    pair = np.zeros_like(working, bool)
    pair[10:30, 20:40] = True  # upper bar
    pair[30:70, 24:36] = True  # lower, narrower bar: a notch where they meet
    top, bottom = np.zeros_like(pair), np.zeros_like(pair)
    top[10:40, 100:112] = True
    bottom[42:80, 100:112] = True
    working[pair | top | bottom] = 200
    return Geometry(working, {1: pair, 2: top, 3: bottom}), pair, top | bottom


def test_a_relabel_changes_the_call_and_keeps_the_machine_label() -> None:
    outcome = apply_edit(_cell(), Relabel(3, "21"))  # one of the two 2s is really a 21
    changed = {c.number: c for c in outcome.chromosomes}[3]
    assert (changed.label, changed.machine_label, changed.edited) == ("21", "2", True)
    assert outcome.before == {"chromosome": 3, "label": "2"} and outcome.after == {"chromosome": 3, "label": "21"}
    assert metaphase_karyotype(outcome.chromosomes).iscn == "46,XX,-2,+21"
    back = apply_edit(outcome.chromosomes, Relabel(3, "2"))  # relabelled back: no longer an edit
    assert not {c.number: c for c in back.chromosomes}[3].edited
    assert metaphase_karyotype(back.chromosomes).iscn == "46,XX"


def test_a_deleted_false_detection_leaves_the_count() -> None:
    cell = _cell() + [ReviewedChromosome(47, "21", 0.4, (5, 5, 9, 9))]
    assert metaphase_karyotype(cell).iscn == "47,XX,+21"
    outcome = apply_edit(cell, Delete(47))
    assert outcome.removed == [47] and len(outcome.chromosomes) == 46
    assert metaphase_karyotype(outcome.chromosomes).iscn == "46,XX"


def test_a_split_makes_two_chromosomes_with_their_own_geometry() -> None:
    geometry, pair, _ = _geometry()
    # as the service has them: decoded from the report's RLE (pycocotools decodes column-major)
    geometry = Geometry(geometry.working, {n: mask_from_rle(mask_rle(m)) for n, m in geometry.masks.items()})
    assert geometry.masks[1].flags.c_contiguous
    cell = [ReviewedChromosome(1, "1", 0.8, (20, 10, 40, 70))]
    outcome = apply_edit(cell, SplitInTwo(1, ("4", "21")), geometry)
    assert outcome.removed == [1] and [c.number for c in outcome.chromosomes] == [2, 3]
    assert [(c.label, c.origin, c.score) for c in outcome.chromosomes] == [("4", "split", None), ("21", "split", None)]
    first, second = outcome.made[2], outcome.made[3]
    assert not (first.mask & second.mask).any() and ((first.mask | second.mask) == pair).all()
    assert first.straightened.max() == 200 and first.straightened.shape[0] >= first.straightened.shape[1]


def test_a_mask_without_notches_is_split_across_its_long_axis() -> None:
    bar = np.zeros((80, 40), bool)
    bar[10:70, 15:25] = True
    a, b = split_mask(bar)
    assert a.sum() == b.sum() == 300 and not (a & b).any()
    assert {np.nonzero(a)[0].max() < np.nonzero(b)[0].min(), np.nonzero(b)[0].max() < np.nonzero(a)[0].min()} == {
        True,
        False,
    }


def test_a_merge_makes_one_chromosome_of_two() -> None:
    geometry, _, union = _geometry()
    cell = [ReviewedChromosome(2, "19", 0.5, None), ReviewedChromosome(3, "20", 0.5, None)]
    outcome = apply_edit(cell, MergeTwo((2, 3), "7"), geometry)
    assert outcome.removed == [2, 3] and [(c.number, c.label, c.origin) for c in outcome.chromosomes] == [
        (4, "7", "merged")
    ]
    assert (outcome.made[4].mask == union).all() and outcome.made[4].bbox == (100, 10, 112, 80)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (Relabel(99, "1"), "no chromosome 99"),
        (Relabel(1, "23"), "unknown chromosome label"),
        (Relabel(1, "1"), "already labelled 1"),
        (MergeTwo((1, 1), "1"), "two different chromosomes"),
        (SplitInTwo(1, ("1", "2")), "outline of chromosome 1 is not available"),
    ],
)
def test_a_correction_that_cannot_be_applied_says_why(edit, message: str) -> None:
    with pytest.raises(EditError, match=message):
        apply_edit(_cell(), edit)


def test_the_reviewed_report_follows_the_corrections_and_keeps_the_machine_call() -> None:
    geometry, pair, _ = _geometry()
    chromosomes = [ReviewedChromosome(1, "1", 0.8, (20, 10, 40, 70)), ReviewedChromosome(2, "2", 0.45, None)]
    machine = {
        "schema_version": 1, "image": "m.png", "width": 160, "height": 120, "karyotype": "2,-",
        "chromosome_count": 2, "abnormalities": [], "timings_ms": {"segment": 1, "straighten": 1, "classify": 1,
        "assemble": 1}, "models": {}, "call": {"karyotype": "2,-", "confidence": 0.9, "review": []},
        "chromosomes": [
            {"id": 1, "label": "1", "class_index": 1, "score": 0.8, "top3": [["1", 0.8], ["4", 0.1]], "angle": 0.0,
             "low_confidence": False, "bbox": [20, 10, 40, 70], "mask": mask_rle(pair)},
            {"id": 2, "label": "2", "class_index": 2, "score": 0.45, "top3": [["2", 0.45], ["3", 0.4]], "angle": 0.0,
             "low_confidence": True, "bbox": [100, 10, 112, 40], "mask": mask_rle(geometry.masks[2])},
        ],
    }  # fmt: skip
    relabel = apply_edit(chromosomes, Relabel(2, "3"))
    first = reviewed_report(machine, relabel.chromosomes, relabel.made, {"revision": 1})
    validate_report(first)
    entry = first["chromosomes"][1]
    assert (entry["label"], entry["score"], entry["low_confidence"]) == ("3", 0.4, False)
    assert entry["machine"] == {"label": "2", "score": 0.45, "low_confidence": True}
    assert first["review"]["machine_call"]["karyotype"] == "2,-" and "call" not in first
    split = apply_edit(relabel.chromosomes, SplitInTwo(1, ("4", "5")), geometry)
    second = reviewed_report(first, split.chromosomes, split.made, {"revision": 2})
    validate_report(second)
    assert [c["id"] for c in second["chromosomes"]] == [2, 3, 4]
    assert second["review"] == {"revision": 2, "machine_call": first["review"]["machine_call"]}
    assert (mask_from_rle(second["chromosomes"][1]["mask"]) == split.made[3].mask).all()
    assert second["chromosomes"][1]["score"] is None and second["chromosomes"][1]["origin"] == "split"
    back = apply_edit(split.chromosomes, Relabel(2, "2"))
    third = reviewed_report(second, back.chromosomes, back.made, {"revision": 3})
    assert third["chromosomes"][0]["score"] == 0.45 and "machine" not in third["chromosomes"][0]
    assert len(outline(pair)) >= 4 and outline(np.zeros((5, 5), bool)) == []
