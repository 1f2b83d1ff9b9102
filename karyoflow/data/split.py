"""Seeded train/validation split by cell, written to a JSON split file.

Cells, not images, are split, so no cell has ICIs or MCIs on both sides. The cells of the
class-labelled real MCIs (bioimlab-labelled: 1, 2, 3, 4, 7, 8, 106, 107) always go to
validation: they are the honest real-image joint test of the whole pipeline and must never be
trained on.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from karyoflow.data.bioimlab import DataError, case_sort_key, list_ici_cases, list_mcis, mci_case
from karyoflow.data.icis import case_of_cell, ici_layout, read_ici_cells
from karyoflow.labels import LABELS

LABELLED_JOINT_TEST_CELLS = ("1", "2", "3", "4", "7", "8", "106", "107")
DEFAULT_VAL_CELLS = 16
DEFAULT_SEED = 2026


def make_split(cases: list[str], n_val: int = DEFAULT_VAL_CELLS, seed: int = DEFAULT_SEED) -> dict:
    forced = [c for c in LABELLED_JOINT_TEST_CELLS if c in cases]
    if n_val < len(forced):
        raise DataError(f"need at least {len(forced)} validation cells (the labelled ones)")
    if n_val >= len(cases):
        raise DataError(f"{n_val} validation cells leave nothing to train on ({len(cases)} cells)")
    rest = sorted(set(cases) - set(forced), key=case_sort_key)
    drawn = random.Random(seed).sample(rest, n_val - len(forced))
    val = sorted(forced + drawn, key=case_sort_key)
    train = [c for c in sorted(cases, key=case_sort_key) if c not in val]
    return {
        "seed": seed,
        "unit": "cell",
        "forced_val": forced,
        "train": train,
        "val": val,
    }


def write_split(split: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(split, indent=1) + "\n")
    tmp.replace(path)


def read_split(path: Path, subset: str | None = None) -> list[str] | dict:
    try:
        split = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read split file {path}: {error}") from error
    if subset is None:
        return split
    if subset not in split or not isinstance(split[subset], list):
        raise DataError(f"split file {path} has no subset '{subset}'")
    return [str(c) for c in split[subset]]


# -- G-band: split by case (person), stratified by the case's constitutional change --

DEFAULT_VAL_FRACTION = 0.2


INCOMPLETE_CELL = 40  # a labelled cell with fewer chromosomes is incomplete, not a karyotype


def cell_change(records: list) -> str:
    """What a labelled cell shows for stratifying: its autosomal gains ('+21') and an abnormal
    sex complement ('XXY', 'XXX', 'X'), joined by commas; 'normal' when neither. A single
    missing autosome is left out: in a metaphase preparation it is usually a random loss of that
    cell, not the person's karyotype. A cell with more than one change (an incomplete or
    doubtfully labelled one, such as 45,XXY,-17,-18) says nothing either."""
    if len(records) < INCOMPLETE_CELL:
        return "normal"
    counts = Counter(LABELS[r.class_index] for r in records)
    tokens = [f"+{label}" for label in LABELS[:22] for _ in range(counts[label] - 2)]
    sex = "X" * counts["X"] + "Y" * counts["Y"]
    if sex not in ("XX", "XY"):
        tokens.append(sex or "no-sex-chromosome")
    losses = sum(max(2 - counts[label], 0) for label in LABELS[:22])
    if len(tokens) + losses > 1:
        return "normal"
    return ",".join(tokens) or "normal"


def case_stratum(cell_changes: list[str]) -> str:
    """A case's stratum: the union of its cells' changes (see `cell_change`)."""
    tokens = {token for change in cell_changes for token in change.split(",") if token != "normal"}
    return ",".join(sorted(tokens)) or "normal"


def make_case_split(
    cell_changes: dict[str, str],
    case_of: dict[str, str],
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
) -> dict:
    """Seeded split by case: every cell of a case on one side. Within each stratum (normal, +21,
    +18, XXY, XXX, X, ...) a `val_fraction` share of the cases goes to validation, at least one case
    of every abnormal stratum, so each constitutional change is validated."""
    if not 0 < val_fraction < 1:
        raise DataError(f"the validation fraction must be in (0, 1), got {val_fraction}")
    cells_of: dict[str, list[str]] = {}
    for cell in sorted(cell_changes, key=case_sort_key):
        cells_of.setdefault(case_of[cell], []).append(cell)
    strata: dict[str, list[str]] = {}
    for case, cells in sorted(cells_of.items()):
        strata.setdefault(case_stratum([cell_changes[c] for c in cells]), []).append(case)
    rng = random.Random(seed)
    val_cases: list[str] = []
    for stratum, cases in sorted(strata.items()):
        n_val = round(len(cases) * val_fraction)
        if stratum != "normal":
            n_val = max(n_val, 1)
        val_cases += rng.sample(cases, n_val)
    if len(val_cases) >= len(cells_of):
        raise DataError("the validation fraction leaves no case to train on")
    val_set = set(val_cases)
    val = [c for c in sorted(cell_changes, key=case_sort_key) if case_of[c] in val_set]
    train = [c for c in sorted(cell_changes, key=case_sort_key) if case_of[c] not in val_set]
    return {
        "seed": seed,
        "unit": "case",
        "val_fraction": val_fraction,
        "strata": {s: len(cases) for s, cases in sorted(strata.items())},
        "val_cases": sorted(val_set),
        "train": train,
        "val": val,
    }


def make_split_for(
    data_dir: Path,
    val_cells: int = DEFAULT_VAL_CELLS,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
) -> dict:
    """The split a data folder's layout calls for: by cell for BioImLab (one cell per case),
    by case and stratified by change for G-band (several cells per case)."""
    layout = ici_layout(data_dir)
    if layout == "bioimlab":
        return make_split(list_ici_cases(data_dir), val_cells, seed)
    cells = read_ici_cells(data_dir)
    changes = {cell: cell_change(records) for cell, records in cells.items()}
    split = make_case_split(changes, {cell: case_of_cell(cell, layout) for cell in cells}, val_fraction, seed)
    return {"layout": layout, **split}


def validation_cells_among(folder: Path, val_cases: set[str]) -> list[str]:
    """The validation cells that a folder of extra training MCIs holds, in cell order. Extra
    training MCIs must hold none: a semi-synthetic MCI (`karyo data synth`) of a validation cell
    shows its chromosomes to the model. A folder without MCIs is an error."""
    paths = list_mcis(folder)
    if not paths:
        raise DataError(f"no MCIs (labelme *.json) in {folder} or {folder / 'mci'}")
    cases = {mci_case(path) for path in paths}
    return sorted(cases & val_cases, key=case_sort_key)
