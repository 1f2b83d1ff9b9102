"""Where the files that ship with Karyoflow are: the committed model weights and their cards
(`models/`), the train/validation split (`splits/`) and the report schema (`schemas/`).

In a source checkout, and in an editable install, `models/` and `splits/` are the folders at the
top of the repository; a wheel carries them as the package data `karyoflow/models/` and
`karyoflow/splits/` (setup.py maps them), so `pip install .` gives a `karyo` that finds its
models from any folder. KARYO_MODELS_DIR points the default weights elsewhere (a mounted volume,
a folder of retrained models with the same file names).
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

MODELS_DIR_ENV = "KARYO_MODELS_DIR"
CLASSIFIER_FILE = "chrnet4.pt"
GBAND_CLASSIFIER_FILE = "chrnet4-gband.pt"
# the segmenter of each engine (karyoflow.segment.engines), per stain
SEGMENTER_FILES = {"torchvision": "chrrender.pt", "detectron2": "chrrender-detectron2.pt"}
GBAND_SEGMENTER_FILES = {"torchvision": "chrrender-gband.pt", "detectron2": "chrrender-detectron2-gband.pt"}
PAIR_SPLIT_FILE = "pairsplit.pt"


def shipped_dir(name: str) -> Path:
    """The folder `name` (models, splits, schemas) of this installation."""
    packaged = files("karyoflow") / name
    if packaged.is_dir():  # a wheel's package data, or schemas/ anywhere
        return Path(str(packaged))
    return Path(__file__).resolve().parents[1] / name  # the top of a source checkout


def models_dir() -> Path:
    override = os.environ.get(MODELS_DIR_ENV)
    return Path(override).expanduser() if override else shipped_dir("models")


def default_classifier_weights(stain: str = "q") -> Path:
    """The shipped ChrNet4 for a stain: Q-band (chrnet4.pt) or G-band (chrnet4-gband.pt)."""
    return models_dir() / (GBAND_CLASSIFIER_FILE if stain == "g" else CLASSIFIER_FILE)


def default_segmenter_weights(engine: str = "torchvision", stain: str = "q") -> Path:
    """The weights a segmentation engine uses for a stain when none are named (the G-band ones
    are optional: the pipeline falls back to the Q-band ones on the inverted image)."""
    return models_dir() / (GBAND_SEGMENTER_FILES if stain == "g" else SEGMENTER_FILES)[engine]


def default_pair_split_weights() -> Path:
    """PairSplit (karyoflow.pairsplit), which cluster resolution uses where it is installed."""
    return models_dir() / PAIR_SPLIT_FILE


def shipped_segmenter_weights(engine: str, stain: str) -> Path:
    """The segmenter an engine uses for a stain: the stain's own where installed, else the
    Q-band one (which segments a G-band image once inverted)."""
    own = default_segmenter_weights(engine, stain)
    return own if own.is_file() else default_segmenter_weights(engine)


def default_split() -> Path:
    """The committed split of the BioImLab cells (splits/bioimlab.json)."""
    return shipped_dir("splits") / "bioimlab.json"


def report_schema_path() -> Path:
    return shipped_dir("schemas") / "report.schema.json"
