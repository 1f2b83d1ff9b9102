"""Prediction and classification metrics for ICIs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from karyoflow.classify.model import ChrNet4
from karyoflow.karyotype import assign_classes
from karyoflow.labels import LABELS, NUM_CLASSES


@torch.no_grad()
def predict_probabilities(
    model: ChrNet4,
    images: torch.Tensor,
    batch_size: int = 128,
    tta: bool = False,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Softmax over the 24 classes; with `tta`, averaged over the four flips of each ICI
    (a straightened chromosome's polarity is unknown, and training saw all four). Off by
    default: it costs 4x and gave no gain for the default model (docs/classification.md)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        views = [batch]
        if tta:
            views += [batch.flip(-1), batch.flip(-2), batch.flip(-1, -2)]
        probs = torch.stack([model(v).softmax(1) for v in views]).mean(0)
        out.append(probs.cpu())
    return torch.cat(out) if out else torch.zeros(0, NUM_CLASSES)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int = NUM_CLASSES) -> np.ndarray:
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def classification_report(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """accuracy, macro recall/precision, per-class figures and the confusion (rows true)."""
    matrix = confusion_matrix(y_true, y_pred)
    support = matrix.sum(1)
    predicted = matrix.sum(0)
    correct = np.diag(matrix)
    recall = np.divide(correct, support, out=np.zeros(NUM_CLASSES), where=support > 0)
    precision = np.divide(correct, predicted, out=np.zeros(NUM_CLASSES), where=predicted > 0)
    present = support > 0
    per_class = {
        LABELS[i]: {
            "recall": float(recall[i]),
            "precision": float(precision[i]),
            "support": int(support[i]),
            "predicted": int(predicted[i]),
        }
        for i in range(NUM_CLASSES)
    }
    return {
        "n": int(len(y_true)),
        "accuracy": float(correct.sum() / max(len(y_true), 1)),
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "per_class": per_class,
        "confusion": matrix.tolist(),
    }


def save_confusion_png(matrix: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(9, 8))
    shown = np.where(matrix > 0, matrix, np.nan)
    im = ax.imshow(np.log1p(shown), cmap="viridis")
    ax.set_xticks(range(NUM_CLASSES), LABELS, fontsize=7)
    ax.set_yticks(range(NUM_CLASSES), LABELS, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    for i, j in zip(*np.nonzero(matrix), strict=True):
        colour = "black" if i == j else "red"
        ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=5, color=colour)
    fig.colorbar(im, ax=ax, label="log(1 + count)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate_classifier(
    model: ChrNet4, images: torch.Tensor, targets: np.ndarray, cells: list[str], tta: bool, assign: bool, device
) -> dict:
    """`classification_report` of `model` on ICIs with their true classes. With `assign`, the
    karyotype-level assignment is applied cell by cell (a BioImLab cell holds its 46 ICIs) and
    the plain argmax accuracy is reported beside it."""
    probs = predict_probabilities(model, images, tta=tta, device=device)
    predicted = probs.argmax(1).numpy()
    argmax_accuracy = None
    if assign:
        argmax_accuracy = float((predicted == targets).mean())
        cell_of = np.array(cells)
        for cell in sorted(set(cells)):
            rows = np.nonzero(cell_of == cell)[0]
            predicted[rows] = assign_classes(probs[rows].numpy())[0]
    report = classification_report(targets, predicted)
    report["assignment"] = "capacity" if assign else "argmax"
    report["argmax_accuracy"] = argmax_accuracy
    return report
