"""Seeded train/validation split by cell, written to a JSON split file.

Cells, not images, are split, so no cell has ICIs or MCIs on both sides. The cells of the
class-labelled real MCIs (bioimlab-labelled: 1, 2, 3, 4, 7, 8, 106, 107) always go to
validation: they are the honest real-image joint test of the whole pipeline and must never be
trained on.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from karyoflow.data.bioimlab import MCI_NAME, DataError, case_sort_key, list_mcis

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


def validation_cells_among(folder: Path, val_cases: set[str]) -> list[str]:
    """The validation cells that a folder of extra training MCIs holds, in cell order. Extra
    training MCIs must hold none: a semi-synthetic MCI (`karyo data synth`) of a validation cell
    shows its chromosomes to the model. A folder without MCIs is an error."""
    paths = list_mcis(folder)
    if not paths:
        raise DataError(f"no MCIs in {folder / 'mci'}")
    cases = {MCI_NAME.match(path.name)["case"] for path in paths}  # list_mcis keeps only matches
    return sorted(cases & val_cases, key=int)
