"""Karyotype-level assignment and ISCN strings.

A cell has two of each autosome and two sex chromosomes (XX or XY). Classifying each chromosome
on its own ignores that; solving for the whole cell at once fixes most of the errors between
look-alike classes (e.g. 14/15, 21/22/Y), because two chromosomes cannot both be the
third copy of a class when another class still lacks one.

The assignment is a minimum-cost bipartite matching (scipy's linear_sum_assignment) between the
cell's chromosomes and *slots*:
- per autosome two base slots, per sex complement (XX or XY) its two base slots; the cost of a
  chromosome in a slot of class k is -log p_k;
- per class extra slots (a third copy, a fourth, ...), each adding `gain_penalty`;
- using a base slot earns `loss_penalty` (a constant when every base slot is filled), so leaving
  one empty (a monosomy) is only chosen when the evidence outweighs it.
Both sex complements are solved and the cheaper wins. With 46 chromosomes a normal karyotype is
found unless moving one chromosome costs more than `gain_penalty + loss_penalty` nats; with 47 the
extra chromosome goes to the class where it fits best; with fewer, the least supported slots stay
empty. This is the principled relaxation: a class takes a third copy, or loses one, only when the
probabilities say so.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from karyoflow.labels import LABEL_TO_INDEX, LABELS, NUM_CLASSES

X_INDEX, Y_INDEX = LABEL_TO_INDEX["X"], LABEL_TO_INDEX["Y"]
AUTOSOMES = range(22)
DEFAULT_GAIN_PENALTY = 3.0  # nats: an extra copy needs e^3 ~ 20x more evidence than a normal slot
DEFAULT_LOSS_PENALTY = 3.0
FORBIDDEN = 1e6  # cost of a slot a chromosome may not take (finite: the solver needs one)
SEX_COMPLEMENTS: dict[str, tuple[int, ...]] = {"XX": (X_INDEX, X_INDEX), "XY": (X_INDEX, Y_INDEX)}
CLINICAL_NOTE = (
    "Automated analysis of one metaphase; not a clinical call. A cytogeneticist must review the "
    "karyogram and enough metaphases before any finding is reported."
)


@dataclass(frozen=True)
class Karyotype:
    labels: list[int]  # 0..23 per chromosome, in input order (-1: rejected, not a chromosome)
    counts: dict[str, int]  # label -> copies
    iscn: str
    abnormalities: list[dict[str, str]] = field(default_factory=list)  # {"type": gain|loss, "chromosome": label}
    sex_complement: str = ""

    @property
    def abnormal(self) -> bool:
        return bool(self.abnormalities)


def _slots(complement: tuple[int, ...], extra_per_class: int, gain_penalty: float, loss_penalty: float):
    """(class index, added cost) for every slot of one sex complement."""
    slots: list[tuple[int, float]] = []
    for k in AUTOSOMES:
        slots += [(k, -loss_penalty)] * 2
    slots += [(k, -loss_penalty) for k in complement]
    for k in range(NUM_CLASSES):
        slots += [(k, gain_penalty * (j + 1)) for j in range(extra_per_class)]
    return slots


def assign_classes(
    probabilities: np.ndarray,
    gain_penalty: float = DEFAULT_GAIN_PENALTY,
    loss_penalty: float = DEFAULT_LOSS_PENALTY,
    detection_scores: np.ndarray | None = None,
) -> tuple[np.ndarray, str]:
    """Class index (0..23) per chromosome under the cell's capacities, and the base sex
    complement used ("XX" or "XY"); see `solve_assignment`."""
    labels, complement, _ = solve_assignment(probabilities, gain_penalty, loss_penalty, detection_scores)
    return labels, complement


def solve_assignment(
    probabilities: np.ndarray,
    gain_penalty: float = DEFAULT_GAIN_PENALTY,
    loss_penalty: float = DEFAULT_LOSS_PENALTY,
    detection_scores: np.ndarray | None = None,
    forbid: tuple[int, int] | None = None,
) -> tuple[np.ndarray, str, float]:
    """Class index (0..23) per chromosome under the cell's capacities, the base sex complement
    used ("XX" or "XY") and the total cost in nats (lower is better; comparable between two
    readings of the same image with different chromosomes, e.g. a detection split in two).
    `probabilities` is N x 24 (rows sum to 1).

    With `detection_scores` (the segmenter's probability that each detection is a chromosome),
    a detection may also be rejected (index -1) at a cost of -log(1 - score), while keeping it
    costs -log(score) more: a doubtful detection is kept when it fills an empty place of the
    karyotype and dropped when it would be a surplus copy without strong evidence.

    `forbid` = (row, class index) keeps that chromosome out of that class (-1: must be kept);
    `call_margin` uses it to find the best other reading of the cell."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n = probabilities.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64), "XX", 0.0
    if probabilities.ndim != 2 or probabilities.shape[1] != NUM_CLASSES:
        raise ValueError(f"probabilities must be N x {NUM_CLASSES}, got {probabilities.shape}")
    log_p = -np.log(np.clip(probabilities, 1e-12, 1.0))
    # enough extra slots that every chromosome has a place even in a heavily abnormal count
    extra_per_class = max(1, math.ceil(max(n - 46, 0) / NUM_CLASSES) + 1)
    best: tuple[float, np.ndarray, str] | None = None
    for name, complement in SEX_COMPLEMENTS.items():
        slots = _slots(complement, extra_per_class, gain_penalty, loss_penalty)
        slot_class = np.array([k for k, _ in slots])
        slot_cost = np.array([c for _, c in slots])
        cost = log_p[:, slot_class] + slot_cost[None, :]
        if detection_scores is not None:
            scores = np.clip(np.asarray(detection_scores, dtype=np.float64), 1e-6, 1 - 1e-6)
            cost = cost - np.log(scores)[:, None]
            reject = np.repeat(-np.log(1 - scores)[:, None], n, axis=1)
            cost = np.concatenate([cost, reject], axis=1)
            slot_class = np.concatenate([slot_class, np.full(n, -1)])
        if forbid is not None:
            cost[forbid[0], slot_class == forbid[1]] = FORBIDDEN
        rows, cols = linear_sum_assignment(cost)
        total = float(cost[rows, cols].sum())
        labels = np.empty(n, dtype=np.int64)
        labels[rows] = slot_class[cols]
        if best is None or total < best[0] - 1e-9:
            best = (total, labels, name)
    assert best is not None
    return best[1], best[2], best[0]


def call_margin(
    probabilities: np.ndarray,
    gain_penalty: float = DEFAULT_GAIN_PENALTY,
    loss_penalty: float = DEFAULT_LOSS_PENALTY,
    detection_scores: np.ndarray | None = None,
) -> tuple[float, str | None]:
    """How much better (nats) the cell's call is than its best rival, and the rival's ISCN.

    The rival is the cheapest assignment with a different ISCN among those that move one
    chromosome out of the class the best assignment gave it (or keep one it rejected): any other
    karyotype moves at least one chromosome, so this is the nearest competing reading. A margin
    of m nats means the call is e^m times as likely as that rival under the assignment's costs;
    inf when no rival exists (no chromosomes)."""
    labels, _, best = solve_assignment(probabilities, gain_penalty, loss_penalty, detection_scores)
    iscn = karyotype_from_labels(labels).iscn
    rival: tuple[float, str] | None = None
    for row, k in enumerate(labels):
        if k < 0 and detection_scores is None:
            continue
        other, _, cost = solve_assignment(probabilities, gain_penalty, loss_penalty, detection_scores, (row, int(k)))
        if cost >= FORBIDDEN / 2:
            continue
        other_iscn = karyotype_from_labels(other).iscn
        if other_iscn != iscn and (rival is None or cost < rival[0]):
            rival = (cost, other_iscn)
    if rival is None:
        return math.inf, None
    return max(rival[0] - best, 0.0), rival[1]


def count_labels(labels: list[int] | np.ndarray) -> dict[str, int]:
    counted = Counter(int(k) for k in labels if k >= 0)
    return {LABELS[k]: counted.get(k, 0) for k in range(NUM_CLASSES)}


def iscn_from_counts(counts: dict[str, int]) -> tuple[str, list[dict[str, str]]]:
    """ISCN numerical karyotype ("46,XY", "47,XX,+21", "45,X", "47,XXY") and the gains/losses.

    Sex chromosomes are written as the complement found; a gain or loss of X or Y is judged
    against XY when a Y is present, else against XX. Autosomal gains/losses are listed in
    chromosome order, one +/- per copy, as ISCN writes them."""
    total = sum(counts.values())
    n_x, n_y = counts.get("X", 0), counts.get("Y", 0)
    abnormalities: list[dict[str, str]] = []
    expected_x, expected_y = (1, 1) if n_y else (2, 0)
    for label, found, expected in (("X", n_x, expected_x), ("Y", n_y, expected_y)):
        kind = "gain" if found > expected else "loss"
        abnormalities += [{"type": kind, "chromosome": label}] * abs(found - expected)
    sex = "X" * n_x + "Y" * n_y or "-"  # ISCN has no notation for no sex chromosome; mark it
    parts = [str(total), sex]
    for k in AUTOSOMES:
        label = LABELS[k]
        delta = counts.get(label, 0) - 2
        kind, sign = ("gain", "+") if delta > 0 else ("loss", "-")
        parts += [f"{sign}{label}"] * abs(delta)
        abnormalities += [{"type": kind, "chromosome": label}] * abs(delta)
    return ",".join(parts), abnormalities


def karyotype_from_labels(labels: list[int] | np.ndarray, sex_complement: str = "") -> Karyotype:
    counts = count_labels(labels)
    iscn, abnormalities = iscn_from_counts(counts)
    return Karyotype([int(k) for k in labels], counts, iscn, abnormalities, sex_complement)


def assign_karyotype(
    probabilities: np.ndarray,
    gain_penalty: float = DEFAULT_GAIN_PENALTY,
    loss_penalty: float = DEFAULT_LOSS_PENALTY,
    detection_scores: np.ndarray | None = None,
) -> Karyotype:
    """The cell's karyotype; `labels` holds -1 for detections rejected as not chromosomes."""
    labels, complement = assign_classes(probabilities, gain_penalty, loss_penalty, detection_scores)
    return karyotype_from_labels(labels, complement)
