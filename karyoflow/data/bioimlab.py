"""Readers for the BioImLab layout (see ../shared/data/bioimlab/README.md).

    DIR/ici/<case>/<case> <class>[ab].bmp   individual chromosome images (ICIs), class 1..24
    DIR/mci/original_<case>[a-d].json       labelme MCIs with the image embedded

The data directory comes from `--data` or the KARYO_DATA environment variable.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from karyoflow.labels import index_from_class_number
from karyoflow.stain import Stain, to_bright_on_dark

DATA_ENV = "KARYO_DATA"
ICI_NAME = re.compile(r"^(?P<case>\d+) (?P<number>\d+)(?P<copy>[ab]?)\.bmp$")
MCI_NAME = re.compile(r"^original_(?P<case>\d+)(?P<picture>[a-z]?)\.json$")


class DataError(ValueError):
    """The data folder is missing or not in the BioImLab layout."""


def resolve_data_dir(path: str | os.PathLike[str] | None) -> Path:
    """`--data` if given, else KARYO_DATA; checked to exist."""
    chosen = path if path is not None else os.environ.get(DATA_ENV)
    if not chosen:
        raise DataError(f"no data folder: pass --data DIR or set {DATA_ENV}")
    data_dir = Path(chosen).expanduser()
    if not data_dir.is_dir():
        raise DataError(f"data folder {data_dir} does not exist")
    return data_dir


def case_sort_key(case: str) -> tuple[int, str]:
    digits = re.match(r"\d+", case)
    return (int(digits.group()) if digits else 10**9, case)


@dataclass(frozen=True)
class IciRecord:
    path: Path
    case: str  # the cell (BioImLab: case = cell; G-band: "<case>.<cell>")
    class_index: int  # 0..23
    copy: str  # BioImLab "a", "b" or "" (the single X or Y of a male cell); G-band "0", "1", "2"
    stain: Stain = "q"

    def load(self) -> np.ndarray:
        """The ICI in the working representation: bright chromosome on a dark background."""
        return to_bright_on_dark(self.load_raw(), self.stain)

    def load_raw(self) -> np.ndarray:
        """The ICI as stored, in its stain's own polarity."""
        return load_grey(self.path)


def load_grey(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)


def list_ici_cases(data_dir: Path) -> list[str]:
    ici_dir = data_dir / "ici"
    if not ici_dir.is_dir():
        raise DataError(f"{data_dir} has no ici/ folder (BioImLab layout expected)")
    return sorted((p.name for p in ici_dir.iterdir() if p.is_dir()), key=case_sort_key)


def read_ici_case(data_dir: Path, case: str) -> list[IciRecord]:
    """All ICIs of one cell, sorted by class then copy. Unknown file names are an error."""
    case_dir = data_dir / "ici" / case
    records = []
    for path in sorted(case_dir.iterdir()):
        if path.suffix.lower() != ".bmp":
            continue
        match = ICI_NAME.match(path.name)
        if match is None or match["case"] != case:
            raise DataError(f"unexpected ICI file name {path} (want '<case> <class>[ab].bmp')")
        records.append(IciRecord(path, case, index_from_class_number(int(match["number"])), match["copy"]))
    if not records:
        raise DataError(f"no ICIs in {case_dir}")
    return sorted(records, key=lambda r: (r.class_index, r.copy))


def read_icis(data_dir: Path, cases: list[str] | None = None) -> dict[str, list[IciRecord]]:
    """ICIs grouped by cell (cell = case folder)."""
    chosen = list_ici_cases(data_dir) if cases is None else cases
    return {case: read_ici_case(data_dir, case) for case in chosen}


@dataclass
class McImage:
    """One labelme MCI: the image and its polygons (label "chr" or a class name)."""

    path: Path
    case: str
    picture: str
    image: np.ndarray  # H x W uint8 grey
    polygons: list[np.ndarray] = field(default_factory=list)  # each K x 2 float (x, y)
    labels: list[str] = field(default_factory=list)


def read_mci(path: Path) -> McImage:
    match = MCI_NAME.match(path.name)
    if match is None:
        raise DataError(f"unexpected MCI file name {path} (want original_<case>[a-d].json)")
    try:
        document = json.loads(path.read_text())
        raw = base64.b64decode(document["imageData"])
    except OSError as error:
        raise DataError(f"cannot read {path}: {error}") from error
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path} is not a labelme JSON with embedded imageData: {error}") from error
    with Image.open(io.BytesIO(raw)) as image:
        grey = np.asarray(image.convert("L"), dtype=np.uint8)
    mci = McImage(path, match["case"], match["picture"], grey)
    for shape in document.get("shapes", []):
        if shape.get("shape_type", "polygon") != "polygon" or len(shape["points"]) < 3:
            continue
        mci.polygons.append(np.asarray(shape["points"], dtype=np.float64))
        mci.labels.append(str(shape.get("label", "chr")))
    return mci


def list_mcis(data_dir: Path) -> list[Path]:
    mci_dir = data_dir / "mci"
    if not mci_dir.is_dir():
        raise DataError(f"{data_dir} has no mci/ folder (BioImLab layout expected)")
    paths = [p for p in mci_dir.iterdir() if MCI_NAME.match(p.name)]
    return sorted(paths, key=lambda p: case_sort_key(MCI_NAME.match(p.name)["case"]) + (p.name,))


def mci_case(path: Path) -> str:
    """The cell an MCI file belongs to (`original_107a.json` -> "107"); "" for other names."""
    match = MCI_NAME.match(path.name)
    return match["case"] if match else ""
