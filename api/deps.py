"""Shared dependencies: the classifier is loaded once per process, on first use."""

from __future__ import annotations

from functools import lru_cache

from infra.settings import get_settings
from karyoflow.classify.predictor import ChromosomeClassifier


@lru_cache
def get_classifier() -> ChromosomeClassifier:
    settings = get_settings()
    return ChromosomeClassifier(settings.classifier_weights, settings.device)
