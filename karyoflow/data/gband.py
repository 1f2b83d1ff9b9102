"""Reader for the G-band ICI layout (see ../shared/data/gband/README.md).

    DIR/ici/<case>.<cell>/<class>_<copy>.tiff   class 1..22, X, Y (or `other`), copy 0, 1, 2

Each folder is one cell (metaphase); the part of its name before the dot is the patient case, so
cells of one case can be kept on one side of a split. Images are dark bands on white; records
load them in Karyoflow's working representation (bright on dark, see karyoflow.stain).
Unidentified fragments (`other_*`) are not chromosomes of a class and are left out.
"""

from __future__ import annotations

import re
from pathlib import Path

from karyoflow.data.bioimlab import DataError, IciRecord
from karyoflow.labels import LABEL_TO_INDEX

GBAND_ICI_NAME = re.compile(r"^(?P<label>\d{1,2}|X|Y|other)_(?P<copy>\d+)\.tiff?$", re.IGNORECASE)
UNCLASSIFIED = "other"


def patient_case(cell: str) -> str:
    """The case (person) a G-band cell folder belongs to: the name before the first dot."""
    return cell.split(".", 1)[0]


def is_gband_cell_folder(folder: Path) -> bool:
    return any(GBAND_ICI_NAME.match(p.name) for p in folder.iterdir() if p.is_file())


def read_gband_cell(data_dir: Path, cell: str) -> list[IciRecord]:
    """All classified ICIs of one G-band cell, sorted by class then copy."""
    cell_dir = data_dir / "ici" / cell
    if not cell_dir.is_dir():
        raise DataError(f"no cell folder {cell_dir}")
    records = []
    for path in sorted(cell_dir.iterdir()):
        if path.suffix.lower() not in (".tif", ".tiff"):
            continue
        match = GBAND_ICI_NAME.match(path.name)
        if match is None:
            raise DataError(f"unexpected ICI file name {path} (want '<class>_<copy>.tiff', class 1..22, X, Y)")
        label = match["label"].upper() if match["label"].isalpha() else match["label"]
        if label.lower() == UNCLASSIFIED:
            continue
        if label not in LABEL_TO_INDEX:
            raise DataError(f"unknown chromosome class {label!r} in {path}")
        records.append(IciRecord(path, cell, LABEL_TO_INDEX[label], match["copy"], stain="g"))
    if not records:
        raise DataError(f"no ICIs in {cell_dir}")
    return sorted(records, key=lambda r: (r.class_index, r.copy))
