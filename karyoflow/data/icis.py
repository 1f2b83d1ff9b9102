"""ICI sets in any supported layout: BioImLab Q-band or G-band, recognised from the files.

    BioImLab: DIR/ici/<case>/<case> <class>[ab].bmp     one cell per case
    G-band:   DIR/ici/<case>.<cell>/<class>_<copy>.tiff  cells grouped by case

A "cell" is one ICI folder; `case_of_cell` gives the person it belongs to, which is what a
split must keep on one side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from karyoflow.data.bioimlab import DataError, IciRecord, list_ici_cases, read_ici_case
from karyoflow.data.gband import is_gband_cell_folder, patient_case, read_gband_cell
from karyoflow.stain import Stain

Layout = Literal["bioimlab", "gband"]
LAYOUT_STAIN: dict[str, Stain] = {"bioimlab": "q", "gband": "g"}


def ici_layout(data_dir: Path) -> Layout:
    """Which layout DIR/ici/ is in, judged from its first cell folder."""
    cells = list_ici_cases(data_dir)
    if not cells:
        raise DataError(f"{data_dir / 'ici'} holds no cell folders")
    return "gband" if is_gband_cell_folder(data_dir / "ici" / cells[0]) else "bioimlab"


def layout_stain(data_dir: Path) -> Stain:
    return LAYOUT_STAIN[ici_layout(data_dir)]


def list_ici_cells(data_dir: Path) -> list[str]:
    return list_ici_cases(data_dir)


def case_of_cell(cell: str, layout: Layout) -> str:
    return patient_case(cell) if layout == "gband" else cell


def read_ici_cell(data_dir: Path, cell: str, layout: Layout | None = None) -> list[IciRecord]:
    """All ICIs of one cell, sorted by class then copy."""
    chosen = layout or ici_layout(data_dir)
    return read_gband_cell(data_dir, cell) if chosen == "gband" else read_ici_case(data_dir, cell)


def read_ici_cells(data_dir: Path, cells: list[str] | None = None) -> dict[str, list[IciRecord]]:
    """ICIs grouped by cell (all cells when None)."""
    layout = ici_layout(data_dir)
    chosen = list_ici_cells(data_dir) if cells is None else cells
    return {cell: read_ici_cell(data_dir, cell, layout) for cell in chosen}
