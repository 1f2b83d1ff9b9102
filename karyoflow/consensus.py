"""A case's karyotype from its cells' calls: the consensus of a constitutional study.

A lab reports a change only when it is clonal, i.e. seen in enough of the cells it analysed:
- a gain (an extra autosome, +21) or a sex-chromosome change (+X, -X, +Y, -Y) in >= 2 cells;
- an autosomal loss in >= 3 cells: a single missing autosome is usually lost while spreading the
  metaphase, not the person's karyotype;
- a change seen in every analysed cell is the case's karyotype even in a single-cell case, but a
  single cell never makes a clone, so that case needs review.
Each cell counts towards the cell line of its clonal changes (its other, non-clonal changes are
listed apart and are not part of the karyotype). One cell line gives a plain karyotype
(47,XY,+21); several give a mosaic, abnormal lines first and the normal line last, each with its
cell count: mos 47,XX,+21[6]/46,XX[14].

`needs_review` lists why a person must look before the case is signed: too few cells analysed,
cell lines in conflict (a mosaic), a gain or sex-chromosome change seen in a single cell (a lab
analyses more cells before ruling out a low-level mosaic; a single missing autosome is not
flagged), a cell called with low confidence, or cells of both sexes. Single-cell gains of
different chromosomes of one Denver group in different cells (+21 in one cell, +Y in another:
both G) are named together: chromosomes of one group look alike, so one of them may be the
other misread, and the case may have one clone instead of none.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from karyoflow.karyotype import iscn_from_counts
from karyoflow.karyotype_metrics import counts_from_iscn
from karyoflow.labels import LABELS

MIN_CELLS_FOR_CLONE = 2  # gains and sex-chromosome changes
MIN_CELLS_FOR_AUTOSOMAL_LOSS = 3
MIN_CELLS = 2  # fewer analysed cells cannot show a clone
LOW_CONFIDENCE = 0.6  # a cell call whose confidence is below this is looked at
# the Denver groups, by size and centromere position: the chromosomes a misread confuses
DENVER_GROUP: dict[str, str] = {
    **dict.fromkeys(("1", "2", "3"), "A"),
    **dict.fromkeys(("4", "5"), "B"),
    **dict.fromkeys(("6", "7", "8", "9", "10", "11", "12", "X"), "C"),
    **dict.fromkeys(("13", "14", "15"), "D"),
    **dict.fromkeys(("16", "17", "18"), "E"),
    **dict.fromkeys(("19", "20"), "F"),
    **dict.fromkeys(("21", "22", "Y"), "G"),
}


@dataclass(frozen=True)
class CellKaryotype:
    cell: str
    iscn: str
    confidence: float | None = None  # of the call (e.g. mean probability of the assigned classes)


@dataclass(frozen=True)
class Consensus:
    karyotype: str  # ISCN: plain, or `mos A[n]/B[m]`
    cells: int  # cells analysed
    cell_lines: list[tuple[str, int]]  # (ISCN of the line, cells), abnormal lines first
    clonal_changes: list[str]  # e.g. ["+21"]
    non_clonal: list[dict[str, str]] = field(default_factory=list)  # {"cell", "change"} left out
    needs_review: bool = False
    reasons: list[str] = field(default_factory=list)

    @property
    def abnormal(self) -> bool:
        return bool(self.clonal_changes)

    @property
    def mosaic(self) -> bool:
        return len(self.cell_lines) > 1


def cell_changes(iscn: str) -> list[str]:
    """The numerical changes of a cell's karyotype, one per copy: ['+21'], ['-X'], ['-7', '+8']."""
    _, abnormalities = iscn_from_counts(counts_from_iscn(iscn))
    return [("+" if a["type"] == "gain" else "-") + a["chromosome"] for a in abnormalities]


def is_autosomal_loss(change: str) -> bool:
    return change.startswith("-") and change[1:] not in ("X", "Y")


def _sex_line(counts: dict[str, int]) -> str:
    return "male" if counts.get("Y", 0) else "female"


def _apply(base_sex: str, changes: list[str]) -> str:
    """ISCN of the normal karyotype of `base_sex` (XX or XY) with `changes` applied."""
    counts = {label: 2 for label in LABELS[:22]}
    counts["X"], counts["Y"] = (2, 0) if base_sex == "XX" else (1, 1)
    for change in changes:
        counts[change[1:]] += 1 if change[0] == "+" else -1
    return iscn_from_counts(counts)[0]


def look_alike_gains(non_clonal: list[dict[str, str]]) -> list[str]:
    """Review reasons for single-cell gains of different chromosomes of one Denver group seen in
    different cells, one reason per group."""
    by_group: dict[str, list[dict[str, str]]] = {}
    for item in non_clonal:
        if item["change"].startswith("+"):
            by_group.setdefault(DENVER_GROUP[item["change"][1:]], []).append(item)
    return [
        f"gains of different group {group} chromosomes in different cells ("
        + ", ".join(f"{item['change']} in {item['cell']}" for item in items)
        + "): one may be the other misread; compare them"
        for group, items in sorted(by_group.items())
        if len({item["change"] for item in items}) > 1 and len({item["cell"] for item in items}) > 1
    ]


def consensus(
    cells: Sequence[CellKaryotype],
    min_cells: int = MIN_CELLS,
    low_confidence: float = LOW_CONFIDENCE,
) -> Consensus:
    """The case's karyotype from its analysed cells' calls (excluded cells left out beforehand)."""
    if not cells:
        raise ValueError("a consensus needs at least one analysed cell")
    changes_of = {c.cell: cell_changes(c.iscn) for c in cells}
    seen_in = Counter(change for changes in changes_of.values() for change in set(changes))
    n = len(cells)

    def clonal(change: str) -> bool:
        if seen_in[change] == n:
            return True  # in every analysed cell: the karyotype itself
        needed = MIN_CELLS_FOR_AUTOSOMAL_LOSS if is_autosomal_loss(change) else MIN_CELLS_FOR_CLONE
        return seen_in[change] >= needed

    sexes = {c.cell: _sex_line(counts_from_iscn(c.iscn)) for c in cells}
    lines: Counter[str] = Counter()
    non_clonal: list[dict[str, str]] = []
    for c in cells:
        kept = [change for change in changes_of[c.cell] if clonal(change)]
        non_clonal += [{"cell": c.cell, "change": change} for change in changes_of[c.cell] if not clonal(change)]
        base = "XY" if sexes[c.cell] == "male" else "XX"  # changes are written against the cell's own
        lines[_apply(base, kept)] += 1
    # abnormal lines first (larger first), the normal line last, as ISCN orders a mosaic
    ordered = sorted(lines.items(), key=lambda item: (not cell_changes(item[0]), -item[1], item[0]))
    if len(ordered) == 1:
        karyotype = ordered[0][0]
    else:
        karyotype = "mos " + "/".join(f"{line}[{count}]" for line, count in ordered)
    clonal_changes = sorted({change for changes in changes_of.values() for change in changes if clonal(change)})
    reasons = []
    if n < min_cells:
        reasons.append(f"{n} cell{'s' if n != 1 else ''} analysed: at least {min_cells} are needed to call a clone")
    if len(ordered) > 1:
        reasons.append("cell lines differ: " + ", ".join(f"{line} in {count}" for line, count in ordered))
    single = [f"{item['change']} in {item['cell']}" for item in non_clonal if not is_autosomal_loss(item["change"])]
    if single:
        reasons.append("a gain or sex-chromosome change in one cell only: " + ", ".join(single))
    reasons += look_alike_gains(non_clonal)
    doubtful = [c.cell for c in cells if c.confidence is not None and c.confidence < low_confidence]
    if doubtful:
        reasons.append(f"low-confidence call in {', '.join(doubtful)}")
    if len(set(sexes.values())) > 1:
        reasons.append("cells of both sexes: " + ", ".join(f"{cell} {sex}" for cell, sex in sorted(sexes.items())))
    return Consensus(
        karyotype=karyotype,
        cells=n,
        cell_lines=ordered,
        clonal_changes=clonal_changes,
        non_clonal=non_clonal,
        needs_review=bool(reasons),
        reasons=reasons,
    )
