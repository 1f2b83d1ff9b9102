"""Full-karyotyping evaluation of the whole pipeline on labelled MCIs, scored as the paper.

A predicted chromosome is correct when it overlaps a true polygon at mask IoU >= 0.5 (one-to-one,
greedy in detection-score order, as COCO) and carries that polygon's class. Polygons labelled
`chr` (no sure class) count as found or missed but are left out of the class scores, and so are
the predictions matched to them.

- FKA = correct / true (class-labelled polygons): the paper's fully karyotyping accuracy.
- precision = correct / predicted (every prediction except those matched to `chr` polygons).
- recall = macro average over the 24 classes of per-class recall from the confusion matrix
  (missed polygons count in the background column); the micro recall equals FKA.
- OCA = correct / segmented, where segmented = predictions matched to a class-labelled polygon:
  the classification accuracy on what segmentation found.
- table3: MCIs binned by their share of correctly karyotyped chromosomes, at the paper's
  thresholds 42/46, 37/46 and 33/46 (>= 42, 37-41, 33-36, < 33 for a 46-chromosome cell).
- karyotype calls (karyoflow.karyotype_metrics, in percent here): karyotype_accuracy (predicted
  ISCN equals the truth), false_abnormal_rate (normal truth called abnormal), sensitivity
  (abnormal truth called exactly), abnormal_called_rate (abnormal truth called abnormal at all),
  per_change (cells, exact and called-abnormal counts per true change) and count_error (called
  minus true chromosome count -> MCIs). The truth is the MCI's labelme `flags.karyotype`, else
  the cell's ICIs (`ici/<case>/`; 23a+23b is XX, 23+24 is XY), else the polygon labels when every
  polygon is labelled; MCIs without any are left out of these figures. Each cell also lists
  its call's confidence and the kinds of review items it carries.
Every figure is also given for plain argmax classification, to measure the assignment's gain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from karyoflow.data.bioimlab import DataError, McImage, read_ici_case
from karyoflow.karyotype import karyotype_from_labels
from karyoflow.karyotype_metrics import IscnError, karyotype_call_metrics, normalise_iscn
from karyoflow.labels import LABEL_TO_INDEX, LABELS, NUM_CLASSES
from karyoflow.pipeline import KaryotypeResult
from karyoflow.segment.dataset import sample_from_mci
from karyoflow.segment.evaluate import mask_iou_matrix, match_instances

BACKGROUND = NUM_CLASSES  # row/column index of "background" in the confusion matrix
TABLE3_BINS = (("ge42", 42 / 46), ("37to41", 37 / 46), ("33to36", 33 / 46), ("lt33", 0.0))


def true_karyotype(data_dir: Path, mci: McImage) -> str | None:
    """The MCI's own `flags.karyotype` first, else the cell's ICIs, else the polygon labels."""
    if mci.karyotype is not None:
        try:
            return normalise_iscn(mci.karyotype)
        except IscnError as error:
            raise DataError(f"{mci.path}: flags.karyotype: {error}") from error
    ici_dir = data_dir / "ici" / mci.case
    if ici_dir.is_dir():
        return karyotype_from_labels([r.class_index for r in read_ici_case(data_dir, mci.case)]).iscn
    if mci.labels and all(label in LABEL_TO_INDEX for label in mci.labels):
        return karyotype_from_labels([LABEL_TO_INDEX[label] for label in mci.labels]).iscn
    return None


def score_mci(result: KaryotypeResult, mci: McImage, truth_iscn: str | None) -> dict:
    """Counts and confusion entries of one MCI, for the assigned and the argmax labels."""
    sample = sample_from_mci(mci)
    predicted_masks = np.stack([c.mask for c in result.chromosomes]) if result.chromosomes else np.zeros((0, 1, 1))
    pairs = match_instances(mask_iou_matrix(predicted_masks, sample.masks)) if result.chromosomes else []
    match_of_prediction = dict(pairs)
    matched_truths = {t for _, t in pairs}
    labelled = [i for i, label in enumerate(mci.labels) if label in LABEL_TO_INDEX]
    out: dict = {
        "image": mci.path.name,
        "case": mci.case,
        "true": len(labelled),
        "unsure_polygons": len(mci.labels) - len(labelled),
        "found": len(pairs),
        "karyotype_true": truth_iscn,
    }
    for mode in ("assigned", "argmax"):
        confusion = np.zeros((NUM_CLASSES + 1, NUM_CLASSES + 1), dtype=np.int64)
        predicted = correct = segmented = 0
        for p, chromosome in enumerate(result.chromosomes):
            label = chromosome.label if mode == "assigned" else chromosome.argmax_label
            k = LABEL_TO_INDEX[label]
            t = match_of_prediction.get(p)
            if t is not None and t not in labelled:
                continue  # matched to a `chr` polygon: no class to score against
            predicted += 1
            if t is None:
                confusion[BACKGROUND, k] += 1
                continue
            true_k = LABEL_TO_INDEX[mci.labels[t]]
            confusion[true_k, k] += 1
            segmented += 1
            correct += int(true_k == k)
        for t in labelled:
            if t not in matched_truths:
                confusion[LABEL_TO_INDEX[mci.labels[t]], BACKGROUND] += 1
        if mode == "assigned":
            iscn = result.karyotype.iscn
            abnormal = result.karyotype.abnormal
        else:
            argmax = karyotype_from_labels([LABEL_TO_INDEX[c.argmax_label] for c in result.chromosomes])
            iscn, abnormal = argmax.iscn, argmax.abnormal
        out[mode] = {
            "predicted": predicted,
            "segmented": segmented,
            "correct": correct,
            "karyotype": iscn,
            "abnormal": abnormal,
            "confusion": confusion,
        }
    return out


def _rate(numerator: float, denominator: float) -> float | None:
    return round(100.0 * numerator / denominator, 2) if denominator else None


def summarise(per_mci: list[dict], mode: str) -> dict:
    true = sum(c["true"] for c in per_mci)
    predicted = sum(c[mode]["predicted"] for c in per_mci)
    segmented = sum(c[mode]["segmented"] for c in per_mci)
    correct = sum(c[mode]["correct"] for c in per_mci)
    confusion = sum((c[mode]["confusion"] for c in per_mci), np.zeros((NUM_CLASSES + 1,) * 2, dtype=np.int64))
    row_totals = confusion[:NUM_CLASSES].sum(axis=1)
    present = row_totals > 0
    recall = float(np.mean(np.diag(confusion)[:NUM_CLASSES][present] / row_totals[present])) if present.any() else 0.0
    table3 = {name: 0 for name, _ in TABLE3_BINS}
    for c in per_mci:
        share = c[mode]["correct"] / c["true"] if c["true"] else 0.0
        for name, threshold in TABLE3_BINS:
            if share >= threshold - 1e-9:
                table3[name] += 1
                break
    calls = karyotype_call_metrics(
        (c["karyotype_true"], c[mode]["karyotype"]) for c in per_mci if c["karyotype_true"] is not None
    )

    def percent(share: float | None) -> float | None:
        return None if share is None else round(100.0 * share, 2)

    return {
        "fka": _rate(correct, true),
        "precision": _rate(correct, predicted),
        "recall": round(100.0 * recall, 2),
        "oca": _rate(correct, segmented),
        "table3": table3,
        "karyotype_accuracy": percent(calls["karyotype_accuracy"]),
        "false_abnormal_rate": percent(calls["false_abnormal_rate"]),
        "sensitivity": percent(calls["sensitivity"]),
        "abnormal_called_rate": percent(calls["abnormal_called_rate"]),
        "karyotype_cells": {"with_truth": calls["n"], "normal": calls["n_normal"], "abnormal": calls["n_abnormal"]},
        "per_change": calls["per_change"],
        "count_error": calls["count_error"],
        "counts": {"true": true, "predicted": predicted, "segmented": segmented, "correct": correct},
        "confusion": {"labels": [*LABELS, "BG"], "matrix": confusion.tolist()},
    }


def evaluate_joint(
    analyse: Callable[[McImage], KaryotypeResult],
    mcis: Iterable[McImage],
    data_dir: Path,
    progress: Callable[[Iterable], Iterable] = lambda items: items,
) -> dict:
    per_mci = []
    for mci in progress(list(mcis)):
        result = analyse(mci)
        entry = score_mci(result, mci, true_karyotype(data_dir, mci))
        entry["timings_ms"] = result.timings_ms
        entry["confidence"] = round(result.confidence, 4)
        entry["review"] = sorted({item.kind for item in result.review})
        per_mci.append(entry)
    report = summarise(per_mci, "assigned")
    report["argmax"] = {k: v for k, v in summarise(per_mci, "argmax").items() if k != "confusion"}
    report["n_images"] = len(per_mci)
    report["cells"] = [
        {
            "image": c["image"],
            "case": c["case"],
            "true": c["true"],
            "unsure_polygons": c["unsure_polygons"],
            "found": c["found"],
            "predicted": c["assigned"]["predicted"],
            "correct": c["assigned"]["correct"],
            "correct_argmax": c["argmax"]["correct"],
            "karyotype": c["assigned"]["karyotype"],
            "karyotype_argmax": c["argmax"]["karyotype"],
            "karyotype_true": c["karyotype_true"],
            "confidence": c["confidence"],
            "review": c["review"],
            "timings_ms": c["timings_ms"],
        }
        for c in per_mci
    ]
    return report
