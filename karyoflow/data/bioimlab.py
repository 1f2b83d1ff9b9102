"""Readers for the BioImLab layout (see ../shared/data/bioimlab/README.md).

    DIR/ici/<case>/<case> <class>[ab].bmp   individual chromosome images (ICIs), class 1..24
    DIR/mci/original_<case>[a-d].json       labelme MCIs with the image embedded

MCIs are read from every labelme `*.json` file in DIR and in DIR/mci/, whatever its name, so a
lab's own labelled folder reads like BioImLab's. A file's cell (`case`) is its labelme
`flags.case` when set, else the `<case>` of an `original_<case><picture>.json` name, else the
file stem; `flags.karyotype` (an ISCN string) is the cell's true karyotype when given.

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
    karyotype: str | None = None  # the true ISCN karyotype from `flags.karyotype`, when given


def _labelme_document(path: Path) -> dict:
    """The parsed labelme JSON of `path`; a clear DataError for anything else."""
    try:
        document = json.loads(path.read_text())
    except OSError as error:
        raise DataError(f"cannot read {path}: {error}") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not JSON: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("shapes"), list):
        raise DataError(f"{path} is JSON but not a labelme file (no 'shapes' list)")
    flags = document.get("flags")
    if flags is not None and not isinstance(flags, dict):
        raise DataError(f"{path}: labelme 'flags' must be an object")
    return document


def _case_and_picture(path: Path, flags: dict) -> tuple[str, str]:
    match = MCI_NAME.match(path.name)
    if flags.get("case") not in (None, ""):
        case = str(flags["case"])
        return case, match["picture"] if match and match["case"] == case else ""
    if match:
        return match["case"], match["picture"]
    return path.stem, ""


def _labelme_image(path: Path, document: dict) -> np.ndarray:
    """The embedded image, or without one (labelme's 'Save image data' off) the file named by
    `imagePath`, relative to the JSON file."""
    if document.get("imageData"):
        try:
            raw = base64.b64decode(document["imageData"])
            with Image.open(io.BytesIO(raw)) as image:
                return np.asarray(image.convert("L"), dtype=np.uint8)
        except (TypeError, ValueError, OSError) as error:
            raise DataError(f"{path}: its imageData is not a readable image: {error}") from error
    image_path = document.get("imagePath")
    if not image_path:
        raise DataError(f"{path} is a labelme JSON without imageData or imagePath: no image to read")
    image_file = path.parent / str(image_path)
    try:
        with Image.open(image_file) as image:
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except OSError as error:
        raise DataError(f"{path} has no imageData and its imagePath {image_file} is not readable: {error}") from error


def read_mci(path: Path) -> McImage:
    """One labelme file of any name (see the module doc for how its cell is found)."""
    document = _labelme_document(path)
    flags = document.get("flags") or {}
    case, picture = _case_and_picture(path, flags)
    karyotype = flags.get("karyotype")
    if karyotype is not None and not isinstance(karyotype, str):
        raise DataError(f"{path}: flags.karyotype must be an ISCN string, got {karyotype!r}")
    mci = McImage(path, case, picture, _labelme_image(path, document), karyotype=karyotype or None)
    for shape in document["shapes"]:
        if not isinstance(shape, dict) or "points" not in shape:
            raise DataError(f"{path}: a labelme shape without points")
        if shape.get("shape_type", "polygon") != "polygon" or len(shape["points"]) < 3:
            continue
        mci.polygons.append(np.asarray(shape["points"], dtype=np.float64))
        mci.labels.append(str(shape.get("label", "chr")))
    return mci


def mci_case(path: Path) -> str:
    """The cell of one labelme file, without decoding its image."""
    document = _labelme_document(path)
    return _case_and_picture(path, document.get("flags") or {})[0]


def list_mcis(data_dir: Path) -> list[Path]:
    """Every `*.json` file in `data_dir` and in `data_dir/mci/`, whatever its name, sorted by the
    cell its name suggests (numeric where it is a number), then by name. Whether each one is a
    labelme file is checked when it is read (`read_mci`)."""
    folders = [data_dir, data_dir / "mci"]
    paths = [p for folder in folders if folder.is_dir() for p in folder.iterdir() if p.suffix.lower() == ".json"]
    return sorted(paths, key=lambda p: case_sort_key(_case_and_picture(p, {})[0]) + (p.name,))
