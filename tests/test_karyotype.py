"""Karyotype assignment and ISCN strings (no models needed)."""

from __future__ import annotations

import numpy as np
import pytest

from karyoflow.karyotype import assign_classes, assign_karyotype, iscn_from_counts, karyotype_from_labels
from karyoflow.labels import LABEL_TO_INDEX, LABELS, NUM_CLASSES

pytestmark = pytest.mark.unit


def cell_labels(extra: tuple[str, ...] = (), missing: tuple[str, ...] = (), sex: str = "XY") -> list[int]:
    labels = [k for k in range(22) for _ in range(2)] + [LABEL_TO_INDEX[s] for s in sex]
    for label in missing:
        labels.remove(LABEL_TO_INDEX[label])
    return labels + [LABEL_TO_INDEX[label] for label in extra]


def noisy_probabilities(labels: list[int], rng: np.random.Generator, confidence: float = 0.5) -> np.ndarray:
    """Probabilities whose argmax is often wrong: `confidence` on the true class plus noise."""
    noise = rng.dirichlet(np.full(NUM_CLASSES, 0.3), size=len(labels))
    onehot = np.eye(NUM_CLASSES)[labels]
    return confidence * onehot + (1 - confidence) * noise


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (cell_labels(sex="XX"), "46,XX"),
        (cell_labels(sex="XY"), "46,XY"),
        (cell_labels(extra=("21",)), "47,XY,+21"),
        (cell_labels(missing=("13",), sex="XX"), "45,XX,-13"),
        (cell_labels(sex="X"), "45,X"),
        (cell_labels(sex="XXY"), "47,XXY"),
        (cell_labels(sex="XX", extra=("18", "21")), "48,XX,+18,+21"),
    ],
)
def test_iscn_strings(labels: list[int], expected: str) -> None:
    assert karyotype_from_labels(labels).iscn == expected


def test_abnormalities_name_the_chromosome() -> None:
    _, trisomy = iscn_from_counts(karyotype_from_labels(cell_labels(extra=("21",)), "XY").counts)
    assert trisomy == [{"type": "gain", "chromosome": "21"}]
    assert karyotype_from_labels(cell_labels(sex="X")).abnormalities == [{"type": "loss", "chromosome": "X"}]
    assert karyotype_from_labels(cell_labels(sex="XXY")).abnormalities == [{"type": "gain", "chromosome": "X"}]
    assert not karyotype_from_labels(cell_labels(sex="XX")).abnormal


@pytest.mark.parametrize("seed", range(5))
def test_assignment_of_46_respects_the_capacities(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = cell_labels(sex="XY" if seed % 2 else "XX")
    probabilities = noisy_probabilities(truth, rng, confidence=0.3)
    labels, complement = assign_classes(probabilities)
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    assert (counts[:22] == 2).all()
    assert counts[LABEL_TO_INDEX["X"]] + counts[LABEL_TO_INDEX["Y"]] == 2
    assert complement in ("XX", "XY")
    # argmax breaks the capacities on the same probabilities; the assignment fixes most errors
    argmax = probabilities.argmax(axis=1)
    assert np.bincount(argmax, minlength=NUM_CLASSES)[:22].tolist() != [2] * 22
    assert (labels == truth).mean() > (argmax == truth).mean()


def test_a_third_copy_only_when_the_count_says_so() -> None:
    rng = np.random.default_rng(7)
    truth = cell_labels(extra=("21",), sex="XX")  # 47 chromosomes, three 21s
    karyotype = assign_karyotype(noisy_probabilities(truth, rng, confidence=0.8))
    assert karyotype.iscn == "47,XX,+21"
    assert karyotype.abnormalities == [{"type": "gain", "chromosome": "21"}]


def test_weak_extra_evidence_does_not_make_a_gain() -> None:
    """46 chromosomes where a third one looks a little more like a 21 than a 22: the capacity
    keeps the karyotype normal (a gain plus a loss needs much stronger evidence)."""
    truth = cell_labels(sex="XY")
    probabilities = np.eye(NUM_CLASSES)[truth] * 0.9 + 0.1 / NUM_CLASSES
    first_22 = truth.index(LABEL_TO_INDEX["22"])
    probabilities[first_22, LABEL_TO_INDEX["21"]] = 0.5
    probabilities[first_22, LABEL_TO_INDEX["22"]] = 0.4
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    assert assign_karyotype(probabilities).iscn == "46,XY"
    # plain argmax calls a +21 and a -22 on the same probabilities
    assert karyotype_from_labels(probabilities.argmax(axis=1)).iscn == "46,XY,+21,-22"


def test_weak_candidates_fill_gaps_and_surplus_ones_are_rejected() -> None:
    truth = cell_labels(sex="XX", missing=("5",))  # 45 confident chromosomes, one 5 not among them
    probabilities = list(np.eye(NUM_CLASSES)[truth] * 0.95 + 0.05 / NUM_CLASSES)
    scores = [1.0] * len(truth)
    probabilities.append(np.eye(NUM_CLASSES)[LABEL_TO_INDEX["5"]] * 0.9 + 0.1 / NUM_CLASSES)
    scores.append(0.4)  # a weak detection that looks like the missing 5
    probabilities.append(np.eye(NUM_CLASSES)[LABEL_TO_INDEX["1"]] * 0.9 + 0.1 / NUM_CLASSES)
    scores.append(0.4)  # a weak detection that would be a third 1 (a fragment, say)
    karyotype = assign_karyotype(np.array(probabilities), detection_scores=np.array(scores))
    assert karyotype.labels[-2] == LABEL_TO_INDEX["5"]
    assert karyotype.labels[-1] == -1
    assert karyotype.iscn == "46,XX"


def test_assignment_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="N x 24"):
        assign_classes(np.ones((3, 5)) / 5)
    labels, _ = assign_classes(np.zeros((0, NUM_CLASSES)))
    assert labels.size == 0
    assert LABELS[int(assign_classes(np.eye(NUM_CLASSES)[[3]])[0][0])] == "4"
