"""The segmentation engines, behind one interface.

A segmenter is a torch module called as torchvision's detection models are in eval mode: a list
of 3 x H x W image tensors (`dataset.image_tensor`, the per-image intensity scaling both engines
share) gives one dict per image with "boxes" (N x 4, x0 y0 x1 y1), "labels", "scores" and
"masks" (N x 1 x H x W probabilities), all in the input image's pixels. Everything after that
forward pass is common to both engines: the box refinement, the test-time flip and its fusion
(`predictor.segment_images`), the post-processing (`postprocess.select_chromosomes`), the COCO
evaluation and the pipeline.

- torchvision (default): this project's ChrRender (`karyoflow.segment.model`); nothing to
  install beyond the package.
- detectron2: detectron2's PointRend project (`karyoflow.segment.detectron2_backend`), the engine
  of the paper's ChrRender; needs detectron2 built from source (`make detectron2`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from karyoflow.resources import SEGMENTER_FILES, default_segmenter_weights

if TYPE_CHECKING:  # torch is imported where the work is done: the CLI parser imports this module
    import torch

ENGINES = tuple(SEGMENTER_FILES)  # torchvision, detectron2
DEFAULT_ENGINE = "torchvision"
# (short side, longest long side) both engines see by default: BioImLab's 768x576 MCIs as they
# are (the smallest chromosomes are ~15 px long: downscaling loses them)
NATIVE_SIZE = (576, 768)


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"unknown segmentation engine {engine!r}; choose from {', '.join(ENGINES)}")
    return engine


def _weights_format(engine: str) -> str:
    if engine == "detectron2":
        from karyoflow.segment.detectron2_backend import WEIGHTS_FORMAT
    else:
        from karyoflow.segment.predictor import WEIGHTS_FORMAT
    return WEIGHTS_FORMAT


def _engine_of_file(path: Path) -> str | None:
    """The engine whose weights `path` holds, or None (only asked once loading has failed)."""
    import torch

    try:
        found = torch.load(path, map_location="cpu", weights_only=True).get("format")
    except Exception:  # not a weights file at all: the loader's own message says so
        return None
    return next((engine for engine in ENGINES if _weights_format(engine) == found), None)


def segmenter_stain(path: Path, engine: str = DEFAULT_ENGINE) -> str:
    """The stain of the MCIs a segmenter of `engine` was trained on (weights recording none:
    Q-band); weights that are not the engine's are a WeightsError."""
    from karyoflow.weights_io import read_meta

    meta = read_meta(Path(path), _weights_format(engine), "karyo train segment")
    return str(meta.get("stain", "q"))


def load_segmenter(
    path: Path | None, device: torch.device | str = "cpu", engine: str = DEFAULT_ENGINE
) -> tuple[torch.nn.Module, dict]:
    """The engine's segmenter (see the module docstring) from `path` (default: the engine's
    shipped weights) and its metadata. Weights of the other engine are a WeightsError that
    names the engine to use."""
    from karyoflow.weights_io import WeightsError

    check_engine(engine)
    path = Path(path or default_segmenter_weights(engine))
    try:
        if engine == "detectron2":
            from karyoflow.segment.detectron2_backend import load_detector

            model, meta = load_detector(path, device)
        else:
            from karyoflow.segment.predictor import load_torchvision_segmenter

            model, meta = load_torchvision_segmenter(path, device)
    except WeightsError:
        other = _engine_of_file(path) if path.is_file() else None
        if other is not None and other != engine:
            raise WeightsError(f"{path} holds {other} weights, not {engine}: pass --engine {other}") from None
        raise
    return model, {**meta, "engine": engine}


def train_segmenter(engine: str, data_dir: Path, config, out: Path, device: torch.device, resume: bool = False):
    """Train the engine's segmenter on the MCIs of `data_dir` (`config.train_cases`) and write
    its weights to `out`; the training metadata is returned."""
    if check_engine(engine) == "detectron2":
        from karyoflow.segment.detectron2_train import train_detectron2

        return train_detectron2(data_dir, config, out, device, resume=resume)
    from karyoflow.segment.train import train_segmenter as train_torchvision

    return train_torchvision(data_dir, config, out, device, resume=resume)
