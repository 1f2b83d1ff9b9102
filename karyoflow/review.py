"""A reviewer's corrections of one metaphase's chromosomes, and the call they give.

A cytogeneticist checks every karyogram and corrects what the machine got wrong:
- relabel a chromosome (the classifier named it 14, it is a 15);
- delete a false detection (debris, a nucleus, a stain blob);
- split one detection into two chromosomes (a touching pair read as one);
- merge two detections into one chromosome (a chromosome cut in two).

`apply_edit` applies one correction to the metaphase's current chromosomes and returns the new
list, the geometry of any chromosome the edit made (mask, box, straightened image) and a
`before`/`after` description for the audit trail. `metaphase_karyotype` is the call the
corrected chromosomes give: the reviewer's labels are the truth, so the karyotype is their
counts (no assignment). Excluding a whole metaphase is decided at the case level
(`karyoflow.consensus` over the cells left).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from pycocotools import mask as mask_utils

from karyoflow.clusters import concavity_splits
from karyoflow.data.synth import mask_polygon
from karyoflow.karyotype import Karyotype, karyotype_from_labels
from karyoflow.labels import LABEL_TO_INDEX
from karyoflow.pipeline import LOW_CONFIDENCE, cut_out
from karyoflow.report import mask_rle
from karyoflow.stain import Stain
from karyoflow.straighten import straighten

ORIGINS = ("detected", "split", "merged")  # how a chromosome of a reviewed metaphase came to be
EDIT_ACTIONS = ("relabel", "delete", "split", "merge")


class EditError(ValueError):
    """A correction that cannot be applied (unknown chromosome or label, a split that finds no cut)."""


@dataclass(frozen=True)
class ReviewedChromosome:
    """One chromosome of a metaphase as it stands after the corrections so far."""

    number: int  # unique within the metaphase; a chromosome made by an edit gets the next free one
    label: str  # "1".."22", "X", "Y"
    score: float | None  # the classifier's probability of `label`; None for a label only the reviewer gave
    bbox: tuple[int, int, int, int] | None  # x0, y0, x1, y1 (exclusive) in MCI pixels
    origin: str = "detected"  # detected | split | merged
    machine_label: str | None = None  # the classifier's label, when the reviewer changed it

    @property
    def edited(self) -> bool:
        return self.origin != "detected" or self.machine_label is not None


@dataclass(frozen=True)
class NewChromosome:
    """The geometry of a chromosome an edit made: full-size mask, box and straightened image
    (working representation, bright on dark, as the karyogram expects)."""

    mask: np.ndarray
    bbox: tuple[int, int, int, int]
    straightened: np.ndarray
    angle: float  # degrees it was rotated by to stand vertical


@dataclass(frozen=True)
class Relabel:
    chromosome: int
    label: str


@dataclass(frozen=True)
class Delete:
    chromosome: int


@dataclass(frozen=True)
class SplitInTwo:
    chromosome: int
    labels: tuple[str, str]


@dataclass(frozen=True)
class MergeTwo:
    chromosomes: tuple[int, int]
    label: str


Edit = Relabel | Delete | SplitInTwo | MergeTwo


@dataclass
class EditOutcome:
    chromosomes: list[ReviewedChromosome]
    removed: list[int]  # numbers that are gone (deleted, split or merged)
    made: dict[int, NewChromosome] = field(default_factory=dict)  # number -> geometry of what the edit made
    before: dict = field(default_factory=dict)  # for the audit trail
    after: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Geometry:
    """What a split or a merge needs: the metaphase in the working representation (bright on
    dark) and the current chromosomes' masks (H x W bool) by number."""

    working: np.ndarray
    masks: dict[int, np.ndarray]
    stain: Stain = "q"


def check_label(label: str) -> str:
    if label not in LABEL_TO_INDEX:
        raise EditError(f"unknown chromosome label {label!r}: use 1-22, X or Y")
    return label


def _find(chromosomes: list[ReviewedChromosome], number: int) -> ReviewedChromosome:
    for chromosome in chromosomes:
        if chromosome.number == number:
            return chromosome
    raise EditError(f"no chromosome {number} in this metaphase")


def _brief(c: ReviewedChromosome) -> dict:
    return {"chromosome": c.number, "label": c.label}


def _new_chromosome(mask: np.ndarray, geometry: Geometry) -> NewChromosome:
    ici, bbox = cut_out(geometry.working, mask)
    straightened = straighten(ici)
    return NewChromosome(mask, bbox, straightened.image, straightened.angle)


def _mask_of(geometry: Geometry | None, number: int) -> np.ndarray:
    if geometry is None or number not in geometry.masks:
        raise EditError(f"the outline of chromosome {number} is not available: it cannot be split or merged")
    return geometry.masks[number]


def split_mask(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A mask cut in two: the best cut between the notches two touching chromosomes leave in
    the outline (karyoflow.clusters), else straight across the middle of its long axis (two
    chromosomes end to end leave no notch)."""
    cuts = concavity_splits(mask, limit=1)
    if cuts:
        return cuts[0]
    ys, xs = np.nonzero(mask)
    if ys.size < 2:
        raise EditError("the outline is too small to split")
    coords = np.stack([xs, ys], axis=1).astype(np.float64)
    centred = coords - coords.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    along = centred @ eigenvectors[:, int(np.argmax(eigenvalues))]
    first = along < np.median(along)
    if first.all() or not first.any():
        raise EditError("the outline cannot be cut in two")
    piece_a, piece_b = np.zeros_like(mask, bool), np.zeros_like(mask, bool)
    piece_a[ys[first], xs[first]] = True
    piece_b[ys[~first], xs[~first]] = True
    return piece_a, piece_b


def apply_edit(chromosomes: list[ReviewedChromosome], edit: Edit, geometry: Geometry | None = None) -> EditOutcome:
    """`chromosomes` after one correction. Splits and merges need `geometry`; relabels and
    deletions do not."""
    next_number = max((c.number for c in chromosomes), default=0) + 1
    if isinstance(edit, Relabel):
        target = _find(chromosomes, edit.chromosome)
        label = check_label(edit.label)
        if label == target.label:
            raise EditError(f"chromosome {target.number} is already labelled {label}")
        machine = target.machine_label or (target.label if target.origin == "detected" else None)
        changed = replace(target, label=label, machine_label=None if machine == label else machine)
        return EditOutcome(
            [changed if c.number == target.number else c for c in chromosomes],
            removed=[],
            before=_brief(target),
            after=_brief(changed),
        )
    if isinstance(edit, Delete):
        target = _find(chromosomes, edit.chromosome)
        return EditOutcome(
            [c for c in chromosomes if c.number != target.number],
            removed=[target.number],
            before=_brief(target),
            after={"chromosome": target.number, "label": None},
        )
    if isinstance(edit, SplitInTwo):
        target = _find(chromosomes, edit.chromosome)
        labels = tuple(check_label(label) for label in edit.labels)
        if len(labels) != 2:
            raise EditError("a split names the labels of its two pieces")
        pieces = split_mask(_mask_of(geometry, target.number))
        made = {next_number + i: _new_chromosome(piece, geometry) for i, piece in enumerate(pieces)}
        new = [
            ReviewedChromosome(number, label, None, item.bbox, origin="split")
            for (number, item), label in zip(made.items(), labels, strict=True)
        ]
        return EditOutcome(
            [c for c in chromosomes if c.number != target.number] + new,
            removed=[target.number],
            made=made,
            before=_brief(target),
            after={"chromosomes": [_brief(c) for c in new]},
        )
    if isinstance(edit, MergeTwo):
        first, second = (_find(chromosomes, n) for n in edit.chromosomes)
        if first.number == second.number:
            raise EditError("a merge needs two different chromosomes")
        label = check_label(edit.label)
        union = _mask_of(geometry, first.number) | _mask_of(geometry, second.number)
        made = {next_number: _new_chromosome(union, geometry)}
        merged = ReviewedChromosome(next_number, label, None, made[next_number].bbox, origin="merged")
        return EditOutcome(
            [c for c in chromosomes if c.number not in (first.number, second.number)] + [merged],
            removed=[first.number, second.number],
            made=made,
            before={"chromosomes": [_brief(first), _brief(second)]},
            after=_brief(merged),
        )
    raise EditError(f"unknown edit {edit!r}")


def metaphase_karyotype(chromosomes: list[ReviewedChromosome]) -> Karyotype:
    """The ISCN call of the corrected chromosomes: their labels counted."""
    return karyotype_from_labels([LABEL_TO_INDEX[c.label] for c in chromosomes])


def mask_from_rle(rle: dict) -> np.ndarray:
    """A report's COCO RLE mask as an H x W bool array."""
    decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
    return np.ascontiguousarray(decoded, dtype=bool)  # pycocotools decodes column-major; OpenCV wants rows


def outline(mask: np.ndarray) -> list[list[int]]:
    """The mask's outer outline as a polygon of (x, y) pixel points; empty for an empty mask."""
    if not mask.any():
        return []
    return mask_polygon(mask).astype(int).tolist()


def _entry(chromosome: ReviewedChromosome, base: dict | None, made: NewChromosome | None) -> dict:
    """A chromosome of the reviewed report: the machine's entry with the reviewer's label (the
    machine's label, score and flag kept under `machine` while it differs), or a new entry for
    a chromosome an edit made (no classifier probability: score null, top3 empty)."""
    if made is not None:
        entry = {"id": chromosome.number, "score": None, "top3": [], "angle": round(made.angle, 2),
                 "low_confidence": False, "bbox": list(made.bbox), "mask": mask_rle(made.mask)}  # fmt: skip
    elif chromosome.origin != "detected":  # made by an earlier split or merge: kept as it was
        entry = dict(base)
    else:
        entry = dict(base)
        machine = entry.pop("machine", None) or {
            "label": entry["label"],
            "score": entry["score"],
            "low_confidence": entry.get("low_confidence", entry["score"] < LOW_CONFIDENCE),
        }
        if chromosome.edited:
            # the classifier's probability of the reviewer's label, where it was in its top 3
            top3 = {label: p for label, p in entry.get("top3", [])}
            entry.update(machine=machine, score=top3.get(chromosome.label), low_confidence=False)
        else:
            entry.update(score=machine["score"], low_confidence=machine["low_confidence"])
    entry.update(label=chromosome.label, class_index=LABEL_TO_INDEX[chromosome.label] + 1, origin=chromosome.origin)
    return entry


def reviewed_report(
    current: dict,
    chromosomes: list[ReviewedChromosome],
    made: dict[int, NewChromosome],
    review: dict,
) -> dict:
    """The image's report after a correction, from the report as it stood (the machine's, or
    the previous reviewed one): chromosomes, karyotype and abnormalities follow the corrected
    labels; the machine's call moves under `review.machine_call`. `review`: who and when, the
    revision, the machine's karyotype."""
    entries = {entry["id"]: entry for entry in current["chromosomes"]}
    karyotype = metaphase_karyotype(chromosomes)
    report = {key: value for key, value in current.items() if key not in ("call", "review")}
    report.update(
        karyotype=karyotype.iscn,
        chromosome_count=len(chromosomes),
        abnormalities=karyotype.abnormalities,
        chromosomes=[_entry(c, entries.get(c.number), made.get(c.number)) for c in chromosomes],
        review={**current.get("review", {}), **review},
    )
    if "call" in current:
        report["review"]["machine_call"] = current["call"]
    return report
