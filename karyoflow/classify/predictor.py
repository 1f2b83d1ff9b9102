"""ChromosomeClassifier: loads ChrNet4 once, classifies the ICIs of a cell. Used in process by
the pipeline (Karyotyper, and through it the workers), the API's ICI endpoint and `karyo
classify`; `prediction_from_probabilities` turns a worker's per-ICI probabilities into the same
prediction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from karyoflow.classify.evaluate import predict_probabilities
from karyoflow.classify.preprocess import PreparedCell, Preprocessing
from karyoflow.classify.weights import load_weights
from karyoflow.labels import LABELS


@dataclass(frozen=True)
class IciPrediction:
    label: str
    class_index: int  # 1..24, as the BioImLab file names and reports
    score: float
    top3: list[tuple[str, float]]
    angle: float  # degrees the ICI was rotated by when straightened
    probabilities: np.ndarray  # 24


class ChromosomeClassifier:
    def __init__(self, weights: Path | None = None, device: str | None = None, tta: bool = False) -> None:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            torch.set_flush_denormal(True)
        self.device = torch.device(device)
        self.model, self.meta = load_weights(weights, self.device)
        self.preprocessing = Preprocessing.from_meta(self.meta)
        self.tta = tta

    def classify_cell(self, images: list[np.ndarray]) -> list[IciPrediction]:
        """Classify the ICIs of one cell together (they share the cell's scale normalisation)."""
        return self.predict_prepared(self.preprocessing.prepare(images))

    def prepare(self, images: list[np.ndarray]) -> PreparedCell:
        """Rotate & crop and scale the ICIs of one cell (the CPU part, timed apart by the pipeline)."""
        return self.preprocessing.prepare(images)

    def predict_prepared(self, prepared: PreparedCell) -> list[IciPrediction]:
        return self.predict_canvases(prepared.canvases, prepared.angles)

    def predict_canvases(self, canvases: np.ndarray, angles: np.ndarray) -> list[IciPrediction]:
        """Classify prepared canvases (N x H x W); `angles` are carried into the predictions."""
        batch = torch.from_numpy(np.ascontiguousarray(canvases, dtype=np.float32))[:, None]
        probs = predict_probabilities(self.model, batch, tta=self.tta, device=self.device).numpy()
        return [prediction_from_probabilities(p, float(angle)) for p, angle in zip(probs, angles, strict=True)]


def prediction_from_probabilities(p: np.ndarray, angle: float = 0.0) -> IciPrediction:
    order = np.argsort(-p)[:3]
    return IciPrediction(
        label=LABELS[order[0]],
        class_index=int(order[0]) + 1,
        score=float(p[order[0]]),
        top3=[(LABELS[i], float(p[i])) for i in order],
        angle=float(angle),
        probabilities=p,
    )
