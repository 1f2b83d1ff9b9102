"""The consensus of a constitutional study: clone thresholds, mosaics, non-clonal changes."""

from __future__ import annotations

import pytest

from karyoflow.consensus import CellKaryotype, cell_changes, consensus

pytestmark = pytest.mark.unit


def cells(*karyotypes: str, confidence: float | None = None) -> list[CellKaryotype]:
    return [CellKaryotype(f"c{i + 1}", k, confidence) for i, k in enumerate(karyotypes)]


def test_a_change_in_every_cell_is_the_karyotype() -> None:
    result = consensus(cells("47,XY,+21", "47,XY,+21"))
    assert result.karyotype == "47,XY,+21" and result.clonal_changes == ["+21"]
    assert result.cells == 2 and not result.needs_review and result.abnormal and not result.mosaic


def test_gain_clone_needs_two_cells_and_makes_a_mosaic() -> None:
    result = consensus(cells("47,XX,+21", "47,XX,+21", "46,XX", "46,XX", "46,XX"))
    assert result.karyotype == "mos 47,XX,+21[2]/46,XX[3]"
    assert result.needs_review and any("cell lines differ" in r for r in result.reasons)
    single = consensus(cells("47,XX,+21", "46,XX", "46,XX"))
    assert single.karyotype == "46,XX" and not single.abnormal
    assert single.non_clonal == [{"cell": "c1", "change": "+21"}]
    assert single.needs_review and any("+21 in c1" in r for r in single.reasons)  # more cells to analyse


def test_autosomal_loss_needs_three_cells() -> None:
    two = consensus(cells("46,XX", "45,XX,-20", "45,XX,-20"))  # preparation losses
    assert two.karyotype == "46,XX" and len(two.non_clonal) == 2 and not two.needs_review
    three = consensus(cells("45,XX,-20", "45,XX,-20", "45,XX,-20", "46,XX"))
    assert three.karyotype == "mos 45,XX,-20[3]/46,XX[1]" and three.clonal_changes == ["-20"]


def test_sex_chromosome_clones_need_two_cells() -> None:
    assert consensus(cells("45,X", "45,X", "46,XX")).karyotype == "mos 45,X[2]/46,XX[1]"
    assert consensus(cells("45,X", "46,XX", "46,XX")).karyotype == "46,XX"
    assert consensus(cells("47,XXY", "47,XXY")).karyotype == "47,XXY"
    assert consensus(cells("47,XXX", "47,XXX")).karyotype == "47,XXX"


def test_single_cell_case_is_its_call_but_needs_review() -> None:
    result = consensus(cells("47,XY,+18"))
    assert result.karyotype == "47,XY,+18" and result.cells == 1
    assert result.needs_review and "1 cell analysed" in result.reasons[0]


def test_review_reasons_for_confidence_and_sexes() -> None:
    low = consensus(cells("46,XY", "46,XY", confidence=0.4))
    assert low.needs_review and any("low-confidence" in r for r in low.reasons)
    mixed = consensus(cells("46,XY", "46,XX"))
    assert mixed.needs_review and any("both sexes" in r for r in mixed.reasons)


def test_single_cell_gains_of_one_group_in_different_cells_are_named_together() -> None:
    """+21 in one cell and +Y in another (both group G): no clone, but one may be the other misread."""
    result = consensus(cells("47,XY,+21", "47,XYY"))
    assert result.karyotype == "46,XY" and result.needs_review
    assert "gains of different group G chromosomes in different cells (+21 in c1, +Y in c2)" in result.reasons[-1]
    unlike = consensus(cells("47,XY,+21", "47,XY,+8"))  # groups G and C: nothing to compare
    assert not any("group" in reason for reason in unlike.reasons)
    same_cell = consensus(cells("48,XY,+21,+22", "46,XY", "46,XY"))  # one cell: no misread between cells
    assert not any("group" in reason for reason in same_cell.reasons)


def test_non_clonal_changes_are_listed_not_reported() -> None:
    result = consensus(cells("47,XY,+21", "47,XY,+21", "46,XY,-3,+7"))
    assert result.karyotype == "mos 47,XY,+21[2]/46,XY[1]"
    assert {item["change"] for item in result.non_clonal} == {"-3", "+7"}
    assert cell_changes("48,XX,+18,+21") == ["+18", "+21"]
    with pytest.raises(ValueError):
        consensus([])


def test_case_consensus_scored_against_the_truths_consensus() -> None:
    from karyoflow.cell_eval import CellCall, score_case_consensus

    def call(cell: str, truth: str, called: str) -> CellCall:
        return CellCall(cell, cell.split(".")[0], truth, called, called, [], [], [], 0.9)

    report = score_case_consensus(
        [
            call("1.1", "47,XY,+21", "47,XY,+21"),
            call("1.2", "47,XY,+21", "46,XY"),  # +21 missed in one cell: in 1 of 2 cells it is no clone
            call("2.1", "46,XX", "46,XX"),
            call("2.2", "45,XX,-20", "45,XX,-20"),  # a preparation loss in both truth and call
            call("3.1", "45,X", "45,X"),
        ]
    )
    cases = {c["case"]: c for c in report["cases"]}
    assert cases["1"]["truth"] == "47,XY,+21" and cases["1"]["called"] == "46,XY" and not cases["1"]["exact"]
    assert cases["2"]["truth"] == cases["2"]["called"] == "46,XX" and cases["2"]["exact"]
    assert cases["3"]["exact"] and cases["3"]["needs_review"]  # a single cell
    assert report["n_cases"] == 3 and report["case_accuracy"] == pytest.approx(2 / 3)
    assert report["abnormal_cases"] == 2 and report["abnormal_case_accuracy"] == pytest.approx(1 / 2)
    assert report["multi_cell_cases"] == 2 and report["cell_scores"]["n"] == 5


def _case(karyotypes: list[str], excluded: tuple[int, ...] = ()):
    from db.models import Case, CaseImage

    images = [
        CaseImage(position=n, status="done", karyotype=iscn, excluded=n in excluded)
        for n, iscn in enumerate(karyotypes)
    ]
    return Case(), images


def test_the_service_case_karyotype_is_the_consensus_and_fits_its_column() -> None:
    from db.review import KARYOTYPE_COLUMN, refresh_case_consensus

    case, images = _case(["47,XY,+21", "47,XY,+21", "46,XY"])
    refresh_case_consensus(case, images)
    assert (case.karyotype, case.abnormal, case.cells_analysed) == ("mos 47,XY,+21[2]/46,XY[1]", True, 3)
    assert case.needs_review and any(reason.startswith("cell lines differ") for reason in case.review_reasons)
    case, images = _case(["46,XX", "45,XX,-3"])
    refresh_case_consensus(case, images)
    assert (case.karyotype, case.abnormal) == ("46,XX", False)  # a single loss is no clone
    case, images = _case([])
    refresh_case_consensus(case, images)
    assert (case.karyotype, case.abnormal, case.needs_review) == (None, None, True)
    case, images = _case([f"47,XX,+{k}" for k in range(1, 23) for _ in range(2)])
    refresh_case_consensus(case, images)
    assert case.abnormal and len(case.karyotype) <= KARYOTYPE_COLUMN and case.karyotype.endswith("/...")
    assert all(line.endswith("[2]") for line in case.karyotype.removeprefix("mos ").split("/")[:-1])


def test_an_excluded_metaphase_and_a_reviewed_call_change_the_consensus() -> None:
    from db.review import refresh_case_consensus

    case, images = _case(["47,XY,+21", "47,XY,+21", "46,XY"], excluded=(2,))
    refresh_case_consensus(case, images)
    assert (case.karyotype, case.cells_analysed) == ("47,XY,+21", 2)
    images[1].reviewed_karyotype = "46,XY"  # the reviewer found the extra 21 was a 22's homologue
    refresh_case_consensus(case, images)
    assert case.karyotype == "46,XY" and case.needs_review  # +21 in one cell only: flagged
