"""Karyotype calls of cells given as their cut-out chromosomes (ICIs), scored against the labels.

Many labs export each metaphase from their current software as its individual chromosome
images; this evaluates what Karyoflow calls from them: every cell's ICIs are classified
together (they share the cell's normalisation), the karyotype assignment turns the
probabilities into a call, and the ISCN is compared with the truth written by the labels.

Reported: ICI accuracy with plain argmax and after the assignment, the karyotype-call scores of
karyoflow.karyotype_metrics (exact ISCN, false abnormal, sensitivity, per change, count error)
for both, and one row per cell. `constitutional` lists the cells whose truth is one of the
common constitutional changes (47,+21, 47,+18, 47,+13, 47,XXY, 47,XXX, 47,XYY, 45,X) and
whether each was called exactly. `score_case_consensus` groups the cells by case and scores
the cases' consensus karyotypes (karyoflow.consensus) the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from karyoflow.consensus import CellKaryotype, consensus
from karyoflow.data.bioimlab import IciRecord
from karyoflow.karyotype import assign_karyotype, karyotype_from_labels
from karyoflow.karyotype_metrics import change_of, karyotype_call_metrics

CONSTITUTIONAL_CHANGES = ("+21", "+18", "+13", "+X", "+Y", "-X")


@dataclass(frozen=True)
class CellCall:
    cell: str
    case: str
    truth: str
    called: str
    argmax_called: str
    true_labels: list[int]
    assigned_labels: list[int]
    argmax_labels: list[int]
    confidence: float  # mean probability of the assigned class over the cell's ICIs


def call_cell(cell: str, case: str, records: list[IciRecord], probabilities: np.ndarray) -> CellCall:
    """The call for one cell from its ICIs' class probabilities (N x 24, rows in record order)."""
    true_labels = [r.class_index for r in records]
    karyotype = assign_karyotype(probabilities)
    argmax = probabilities.argmax(1)
    picked = probabilities[np.arange(len(records)), np.clip(karyotype.labels, 0, None)]
    return CellCall(
        cell=cell,
        case=case,
        truth=karyotype_from_labels(true_labels).iscn,
        called=karyotype.iscn,
        argmax_called=karyotype_from_labels(argmax).iscn,
        true_labels=true_labels,
        assigned_labels=list(karyotype.labels),
        argmax_labels=[int(k) for k in argmax],
        confidence=float(picked.mean()) if len(records) else 0.0,
    )


def is_constitutional(truth: str) -> bool:
    """One of the common constitutional numerical changes, and nothing else."""
    return change_of(truth) in CONSTITUTIONAL_CHANGES


def score_cell_calls(calls: Iterable[CellCall]) -> dict:
    calls = list(calls)
    true = np.array([k for c in calls for k in c.true_labels], dtype=np.int64)
    assigned = np.array([k for c in calls for k in c.assigned_labels], dtype=np.int64)
    argmax = np.array([k for c in calls for k in c.argmax_labels], dtype=np.int64)
    n_icis = len(true)
    report = {
        "n": len(calls),
        "n_icis": n_icis,
        "ici_accuracy_argmax": float((argmax == true).mean()) if n_icis else None,
        "ici_accuracy_assigned": float((assigned == true).mean()) if n_icis else None,
        **karyotype_call_metrics((c.truth, c.called) for c in calls),
        "argmax": karyotype_call_metrics((c.truth, c.argmax_called) for c in calls),
        "constitutional": [
            {"cell": c.cell, "truth": c.truth, "called": c.called, "exact": c.truth == c.called}
            for c in calls
            if is_constitutional(c.truth)
        ],
        "cells": [
            {
                "cell": c.cell,
                "case": c.case,
                "truth": c.truth,
                "called": c.called,
                "argmax_called": c.argmax_called,
                "exact": c.truth == c.called,
                "confidence": round(c.confidence, 4),
                "icis": len(c.true_labels),
                "wrong_icis": int(sum(a != t for a, t in zip(c.assigned_labels, c.true_labels, strict=True))),
            }
            for c in calls
        ],
    }
    return report


def call_cells(
    cells: dict[str, list[IciRecord]],
    case_of: Callable[[str], str],
    classify_cell: Callable[[list[np.ndarray]], np.ndarray],
    progress: Callable[[Iterable], Iterable] = lambda items: items,
) -> list[CellCall]:
    """Call every cell from its ICIs (`classify_cell`: working-representation images ->
    N x 24 probabilities)."""
    calls = []
    for cell in progress(list(cells)):
        records = cells[cell]
        probabilities = classify_cell([r.load() for r in records])
        calls.append(call_cell(cell, case_of(cell), records, probabilities))
    return calls


def score_case_consensus(calls: Iterable[CellCall]) -> dict:
    """Cases' karyotypes from their cells' calls (karyoflow.consensus), against the consensus of
    the same cells' true karyotypes under the same rules; the per-cell scores alongside."""
    calls = list(calls)
    by_case: dict[str, list[CellCall]] = {}
    for c in calls:
        by_case.setdefault(c.case, []).append(c)
    cases = []
    for case, members in sorted(by_case.items()):
        called = consensus([CellKaryotype(c.cell, c.called, c.confidence) for c in members])
        truth = consensus([CellKaryotype(c.cell, c.truth) for c in members])
        cases.append(
            {
                "case": case,
                "cells": len(members),
                "called": called.karyotype,
                "truth": truth.karyotype,
                "exact": called.karyotype == truth.karyotype,
                "abnormal_truth": truth.abnormal,
                "needs_review": called.needs_review,
                "reasons": called.reasons,
                "non_clonal": called.non_clonal,
            }
        )
    abnormal = [c for c in cases if c["abnormal_truth"]]
    return {
        "n_cases": len(cases),
        "case_accuracy": sum(c["exact"] for c in cases) / len(cases) if cases else None,
        "abnormal_cases": len(abnormal),
        "abnormal_case_accuracy": sum(c["exact"] for c in abnormal) / len(abnormal) if abnormal else None,
        "needs_review_rate": sum(c["needs_review"] for c in cases) / len(cases) if cases else None,
        "multi_cell_cases": sum(c["cells"] > 1 for c in cases),
        "cases": cases,
        "cell_scores": score_cell_calls(calls),
    }
