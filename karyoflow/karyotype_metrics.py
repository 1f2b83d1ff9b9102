"""Scores of karyotype calls: is the ISCN string a lab would read right?

Per-chromosome figures (FKA, ICI accuracy) can look good while the cell's call is wrong: one
missed or doubled chromosome turns 46,XX into 45,XX,-N. These scores compare whole calls.

- karyotype_accuracy: share of cells whose called ISCN equals the truth exactly.
- false_abnormal_rate: share of normal truths (46,XX / 46,XY) called anything else.
- sensitivity: share of abnormal truths called exactly.
- abnormal_called_rate: share of abnormal truths called abnormal at all (any change).
- per_change: for each true change ("normal", "+21", "-X", "+18,+21", ...) the number of cells,
  how many were called exactly and how many were called abnormal.
- count_error: distribution of called minus true chromosome count ({"-1": 3, "0": 40, ...}).

Only numerical ISCN (count, sex chromosomes, +N/-N) is parsed: what the karyotype assignment
writes and what the labelled data give.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from karyoflow.karyotype import iscn_from_counts
from karyoflow.labels import LABELS

ISCN_PATTERN = re.compile(r"^(?P<total>\d+),(?P<sex>[XY]+|-)(?P<changes>(,[+-](\d{1,2}|X|Y))*)$")


class IscnError(ValueError):
    """Not a numerical ISCN karyotype string."""


def counts_from_iscn(iscn: str) -> dict[str, int]:
    """Copies per class ("1".."22", "X", "Y") of a numerical ISCN string such as 47,XX,+21."""
    match = ISCN_PATTERN.match(iscn.replace(" ", ""))
    if match is None:
        raise IscnError(f"not a numerical ISCN karyotype: {iscn!r}")
    counts = {label: 2 for label in LABELS[:22]}
    sex = match["sex"] if match["sex"] != "-" else ""
    counts["X"], counts["Y"] = sex.count("X"), sex.count("Y")
    for token in filter(None, match["changes"].split(",")):
        label = token[1:]
        if label in ("X", "Y"):
            continue  # ISCN writes sex-chromosome changes in the complement itself
        if label not in counts:
            raise IscnError(f"unknown chromosome {label!r} in {iscn!r}")
        counts[label] += 1 if token[0] == "+" else -1
    if sum(counts.values()) != int(match["total"]):
        raise IscnError(f"{iscn!r}: the count {match['total']} does not match the changes written")
    return counts


def normalise_iscn(iscn: str) -> str:
    """The canonical form Karyoflow writes (so '47,XY,+21' and '47, XY, +21' compare equal)."""
    return iscn_from_counts(counts_from_iscn(iscn))[0]


def change_of(iscn: str) -> str:
    """The numerical change of a karyotype: 'normal', '+21', '-X', '+X', '+18,+21', ..."""
    _, abnormalities = iscn_from_counts(counts_from_iscn(iscn))
    if not abnormalities:
        return "normal"
    order = {label: i for i, label in enumerate(LABELS)}
    signs = [("+" if a["type"] == "gain" else "-") + a["chromosome"] for a in abnormalities]
    return ",".join(sorted(signs, key=lambda s: (order[s[1:]], s[0])))


def is_abnormal(iscn: str) -> bool:
    return change_of(iscn) != "normal"


def chromosome_count(iscn: str) -> int:
    return sum(counts_from_iscn(iscn).values())


def karyotype_call_metrics(calls: Iterable[tuple[str, str]]) -> dict:
    """Scores of (true ISCN, called ISCN) pairs; see the module doc. Rates are None where their
    denominator is empty (no normal or no abnormal truth among the cells)."""
    pairs = [(normalise_iscn(truth), normalise_iscn(called)) for truth, called in calls]
    per_change: dict[str, dict[str, int]] = {}
    count_error: Counter[int] = Counter()
    exact = normal = false_abnormal = abnormal = abnormal_exact = abnormal_called = 0
    for truth, called in pairs:
        change = change_of(truth)
        row = per_change.setdefault(change, {"n": 0, "exact": 0, "called_abnormal": 0})
        row["n"] += 1
        hit = truth == called
        called_abnormal = is_abnormal(called)
        row["exact"] += hit
        row["called_abnormal"] += called_abnormal
        exact += hit
        count_error[chromosome_count(called) - chromosome_count(truth)] += 1
        if change == "normal":
            normal += 1
            false_abnormal += called_abnormal
        else:
            abnormal += 1
            abnormal_exact += hit
            abnormal_called += called_abnormal

    def rate(numerator: int, denominator: int) -> float | None:
        return numerator / denominator if denominator else None

    return {
        "n": len(pairs),
        "n_normal": normal,
        "n_abnormal": abnormal,
        "karyotype_accuracy": rate(exact, len(pairs)),
        "false_abnormal_rate": rate(false_abnormal, normal),
        "sensitivity": rate(abnormal_exact, abnormal),
        "abnormal_called_rate": rate(abnormal_called, abnormal),
        "per_change": dict(sorted(per_change.items(), key=lambda item: (item[0] != "normal", item[0]))),
        "count_error": {str(k): count_error[k] for k in sorted(count_error)},
    }
