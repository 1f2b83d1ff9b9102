"""Shared dependencies: a classifier per stain is loaded once per process, on first use."""

from __future__ import annotations

from functools import lru_cache

from infra.settings import get_settings
from karyoflow.classify.predictor import ChromosomeClassifier
from karyoflow.classify.weights import default_weights


@lru_cache
def get_classifier(stain: str = "q") -> ChromosomeClassifier:
    """The ChrNet4 for a stain: KARYO_CLASSIFIER_WEIGHTS (Q-band) or KARYO_CLASSIFIER_WEIGHTS_GBAND
    (G-band), else the committed model."""
    settings = get_settings()
    configured = settings.classifier_weights if stain == "q" else settings.classifier_weights_gband
    return ChromosomeClassifier(configured or default_weights(stain), settings.device)
