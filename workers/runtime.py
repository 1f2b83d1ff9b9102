"""Per-process state of a worker: the models, the object store. Created lazily, once per process
(in the child after the fork: see workers.app)."""

from __future__ import annotations

import threading
from functools import lru_cache

from infra.settings import get_settings
from infra.storage import ObjectStore
from karyoflow.pipeline import Karyotyper

_loading = threading.Lock()


def get_karyotyper() -> Karyotyper:
    """The process's models; loaded once even when a thread pool's tasks all ask at once."""
    with _loading:
        return _load_karyotyper()


@lru_cache
def _load_karyotyper() -> Karyotyper:
    settings = get_settings()
    gband_classifier = settings.classifier_weights_gband
    gband_segmenter = settings.segmenter_weights_gband
    return Karyotyper(
        settings.segmenter_weights,
        settings.classifier_weights,
        device=settings.device,
        segment_tta=settings.segment_tta,
        segment_engine=settings.segment_engine,
        classifier_weights_by_stain={"g": gband_classifier} if gband_classifier else {},
        segmenter_weights_by_stain={"g": gband_segmenter} if gband_segmenter else {},
    )


def register_models(karyotyper: Karyotyper) -> None:
    """Record the weights this worker runs in model_versions (once per sha256): the segmenter,
    and the classifier of every stain whose weights are installed."""
    from sqlalchemy import select

    from db.models import ModelVersion
    from db.session import session_scope

    with session_scope() as session:
        installed = [
            (name, models[name])
            for stain, path in karyotyper.classifier_paths.items()
            if path.is_file()
            for models in [karyotyper.models_for(stain)]  # type: ignore[arg-type]
            for name in ("segmenter", "classifier")
        ]
        for name, info in installed:
            if session.scalar(select(ModelVersion).where(ModelVersion.sha256 == info["sha256"])) is None:
                session.add(
                    ModelVersion(name=name, file=info["file"], sha256=info["sha256"], architecture=info["architecture"])
                )


@lru_cache
def get_store() -> ObjectStore:
    store = ObjectStore(get_settings())
    store.ensure_bucket()
    return store
