"""Karyotyping a cell given as its cut-out chromosomes (ICIs) instead of a metaphase image.

Many labs' current software exports each metaphase as its individual chromosome images. Such a
cell needs no segmentation: its ICIs are put in the working representation (a G-band ICI is
inverted), straightened and classified together (they share the cell's normalisation), the
karyotype assignment makes the call, and the result is the same `KaryotypeResult` an MCI gives,
without MCI coordinates, so the same karyogram and report are written.
"""

from __future__ import annotations

import time

import numpy as np

from karyoflow.classify.predictor import ChromosomeClassifier
from karyoflow.classify.weights import weights_stain
from karyoflow.karyotype import (
    DEFAULT_GAIN_PENALTY,
    DEFAULT_LOSS_PENALTY,
    assign_karyotype,
    call_margin,
    karyotype_from_labels,
)
from karyoflow.labels import LABELS, NUM_CLASSES
from karyoflow.pipeline import Chromosome, KaryotypeResult, review_items
from karyoflow.stain import Stain, to_bright_on_dark


def karyotype_icis(
    classifier: ChromosomeClassifier,
    images: list[np.ndarray],
    names: list[str],
    stain: Stain,
    cell_name: str = "cell",
    assignment: bool = True,
    gain_penalty: float = DEFAULT_GAIN_PENALTY,
    loss_penalty: float = DEFAULT_LOSS_PENALTY,
    classifier_info: dict | None = None,
) -> KaryotypeResult:
    """The karyotype of one cell from its ICIs (grey uint8, in their stain's own polarity)."""
    if not images:
        raise ValueError("a cell needs at least one chromosome image")
    if len(names) != len(images):
        raise ValueError("one name per chromosome image")
    trained_on = weights_stain(classifier.meta)
    if trained_on != stain:
        raise ValueError(f"the classifier was trained on {trained_on}-band ICIs, the cell is {stain}-band")
    timings: dict[str, float] = {"segment": 0.0}
    started = time.perf_counter()
    prepared = classifier.prepare([to_bright_on_dark(image, stain) for image in images])
    timings["straighten"] = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    predictions = classifier.predict_prepared(prepared)
    timings["classify"] = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    probabilities = np.stack([p.probabilities for p in predictions]) if predictions else np.zeros((0, NUM_CLASSES))
    if assignment:
        karyotype = assign_karyotype(probabilities, gain_penalty, loss_penalty)
    else:
        karyotype = karyotype_from_labels([p.class_index - 1 for p in predictions])
    chromosomes = [
        Chromosome(
            id=position + 1,
            label=LABELS[k],
            class_index=int(k) + 1,
            score=float(prediction.probabilities[k]),
            top3=prediction.top3,
            argmax_label=prediction.label,
            detection_score=1.0,
            bbox=None,
            mask=None,
            angle=prediction.angle,
            straightened=prepared.straightened[position],
            candidate=position,
            source=names[position],
        )
        for position, (prediction, k) in enumerate(zip(predictions, karyotype.labels, strict=True))
    ]
    margin, rival = call_margin(probabilities, gain_penalty, loss_penalty) if assignment else (float("inf"), None)
    timings["assemble"] = (time.perf_counter() - started) * 1000
    models = {
        # file and sha256 from the caller, made once per loaded model (karyoflow.pipeline.model_info)
        "classifier": classifier_info
        or {"file": "", "sha256": "", "architecture": classifier.meta.get("architecture", ""), "stain": trained_on},
        "assignment": "capacity" if assignment else "argmax",
    }
    return KaryotypeResult(
        cell_name,
        0,  # no metaphase image: no MCI size
        0,
        chromosomes,
        karyotype,
        {k: round(v, 1) for k, v in timings.items()},
        models,
        stain=stain,
        source="icis",
        margin_nats=margin,
        rival=rival,
        review=review_items(chromosomes, karyotype),
    )
