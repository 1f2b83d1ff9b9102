"""Scores of whole karyotype calls (no models needed)."""

from __future__ import annotations

import pytest

from karyoflow.karyotype_metrics import (
    IscnError,
    change_of,
    counts_from_iscn,
    karyotype_call_metrics,
    normalise_iscn,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("iscn", "change"),
    [
        ("46,XX", "normal"),
        ("46,XY", "normal"),
        ("47,XY,+21", "+21"),
        ("45,X", "-X"),
        ("47,XXY", "+X"),
        ("47,XYY", "+Y"),
        ("48,XX,+21,+18", "+18,+21"),
        ("45,XX,-20", "-20"),
    ],
)
def test_change_of_numerical_karyotypes(iscn: str, change: str) -> None:
    assert change_of(iscn) == change


def test_counts_round_trip_and_spaces() -> None:
    counts = counts_from_iscn("47, XX, +21")
    assert counts["21"] == 3 and counts["X"] == 2 and sum(counts.values()) == 47
    assert normalise_iscn("47, XX, +21") == "47,XX,+21"


@pytest.mark.parametrize("bad", ["46", "46,XX,+21", "mos 47,XX,+21[6]/46,XX[14]", "46,XQ", "47,XX,+23"])
def test_bad_iscn_refused(bad: str) -> None:
    with pytest.raises(IscnError):
        counts_from_iscn(bad)


def test_metrics_of_mixed_calls() -> None:
    calls = [
        ("46,XX", "46,XX"),
        ("46,XY", "45,XY,-3"),  # a normal cell called abnormal
        ("47,XY,+21", "47,XY,+21"),
        ("47,XX,+21", "46,XX"),  # a trisomy missed
        ("45,X", "46,XX"),
        ("47,XXY", "47,XY,+14"),  # abnormal, but the wrong change
    ]
    metrics = karyotype_call_metrics(calls)
    assert metrics["n"] == 6 and metrics["n_normal"] == 2 and metrics["n_abnormal"] == 4
    assert metrics["karyotype_accuracy"] == pytest.approx(2 / 6)
    assert metrics["false_abnormal_rate"] == pytest.approx(1 / 2)
    assert metrics["sensitivity"] == pytest.approx(1 / 4)
    assert metrics["abnormal_called_rate"] == pytest.approx(2 / 4)
    assert metrics["per_change"]["+21"] == {"n": 2, "exact": 1, "called_abnormal": 1}
    assert metrics["per_change"]["normal"] == {"n": 2, "exact": 1, "called_abnormal": 1}
    assert list(metrics["per_change"])[0] == "normal"
    assert metrics["count_error"] == {"-1": 2, "0": 3, "1": 1}


def test_rates_without_a_denominator_are_none() -> None:
    metrics = karyotype_call_metrics([("46,XX", "46,XX")])
    assert metrics["sensitivity"] is None and metrics["abnormal_called_rate"] is None
    assert metrics["karyotype_accuracy"] == 1.0
