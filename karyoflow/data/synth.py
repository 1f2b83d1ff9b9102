"""Semi-synthetic metaphases composed from one cell's labelled ICIs.

For most BioImLab cells the ICIs were cut from another picture than the MCI, so real MCIs of
those cells have no class labels. A semi-synthetic MCI places the cell's 46 real ICIs at random
positions and angles on a 768 x 576 canvas, at their native scale (same microscope and camera as
the MCIs), with a controlled share of chromosomes touching or overlapping another one, a faint
background like the real images' and, sometimes, an interphase-nucleus-like blob as a distractor.
Overlapping chromosomes are combined with a maximum (fluorescence of the upper one dominates),
and each keeps its full mask, as in the real annotations.

Abnormal cells (`abnormal_cell`): one numerical change per cell, from a fixed cycle (+21, +18,
+13, +X, +Y, 45,X, +8, -7, +12, +22, -21). A gained copy is an ICI of the same class from another
cell (a real chromosome, not a duplicate of one already painted); a loss drops one of the cell's
ICIs; 45,X keeps one X (a male cell loses its Y, a female one an X).

Written as labelme JSON (`mci/original_<case><a..>.json`, image embedded, one polygon per
chromosome labelled with its class; `flags.case` the cell, `flags.karyotype` the true ISCN), so
every reader, `karyo eval karyotype` included, takes it like a real MCI.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from karyoflow.data.brightfield import to_brightfield
from karyoflow.data.icis import layout_stain, read_ici_cell
from karyoflow.data.labelme import labelme_document as labelme_json
from karyoflow.files import write_atomically
from karyoflow.karyotype import iscn_from_counts
from karyoflow.labels import LABELS
from karyoflow.straighten import FOREGROUND_LEVEL, rotate_expand

WIDTH, HEIGHT = 768, 576
MAX_TRIES = 300
# Crowding near real BioImLab preparations: about 15% of chromosomes touch another, 12% overlap
DEFAULT_TOUCHING = 0.15
DEFAULT_OVERLAPPING = 0.12
# The numerical changes `--abnormal` cycles through: the constitutional ones a lab sees most
# (trisomies 21, 18, 13; sex-chromosome aneuploidies) and a few others. "-X" is 45,X.
ABNORMAL_CYCLE = ("+21", "+18", "+13", "+X", "+Y", "-X", "+8", "-7", "+12", "+22", "-21")

LabelledIci = tuple[str, np.ndarray]  # (class label "1".."22", "X", "Y"; the ICI)


def cell_iscn(labels: list[str]) -> str:
    """The ISCN karyotype of a cell given its chromosomes' labels."""
    return iscn_from_counts({label: labels.count(label) for label in LABELS})[0]


def abnormal_cell(
    icis: list[LabelledIci], change: str, donors: dict[str, list[np.ndarray]], rng: np.random.Generator
) -> tuple[list[LabelledIci], str]:
    """The cell's ICIs with one numerical change, and the resulting true ISCN karyotype.

    `change` is "+<label>" (a gained copy, drawn from `donors[label]`: ICIs of that class from
    other cells) or "-<label>" (one of the cell's copies dropped); "-X" makes 45,X whatever the
    cell's sex (a male cell loses its Y). The ISCN is computed from the cell's counts and the
    change, independently of the ICIs returned, so a test can hold one against the other."""
    if len(change) < 2 or change[0] not in "+-" or change[1:] not in LABELS:
        raise ValueError(f"a numerical change is +N or -N with N in 1..22, X, Y; got {change!r}")
    sign, label = change[0], change[1:]
    counts = {k: 0 for k in LABELS}
    for k, _ in icis:
        counts[k] += 1
    chosen = list(icis)
    if sign == "+":
        if not donors.get(label):
            raise ValueError(f"no ICI of class {label} from another cell to add")
        counts[label] += 1
        pool = donors[label]
        chosen.append((label, pool[int(rng.integers(len(pool)))]))
    else:
        if label == "X" and counts["Y"]:
            label = "Y"  # 45,X of a male cell: the Y is lost
        if counts[label] == 0:
            raise ValueError(f"the cell has no chromosome {label} to lose")
        counts[label] -= 1
        copies = [i for i, (k, _) in enumerate(chosen) if k == label]
        del chosen[copies[int(rng.integers(len(copies)))]]
    return chosen, iscn_from_counts(counts)[0]


@dataclass
class SyntheticMci:
    image: np.ndarray  # H x W uint8
    masks: list[np.ndarray]  # full H x W bool per chromosome
    labels: list[str]
    polygons: list[np.ndarray]  # K x 2 (x, y) per chromosome
    placement: list[str]  # "free", "touching" or "overlapping" as achieved


def chromosome_mask(image: np.ndarray) -> np.ndarray:
    """The ICI's chromosome: the largest connected foreground component (drops specks and the
    bits of neighbours some ICIs contain)."""
    foreground = (image > FOREGROUND_LEVEL).astype(np.uint8)
    foreground = cv2.morphologyEx(foreground, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    count, components, stats, _ = cv2.connectedComponentsWithStats(foreground, connectivity=8)
    if count <= 1:
        return foreground.astype(bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return components == largest


def mask_polygon(mask: np.ndarray) -> np.ndarray:
    """Outline of a single-component mask as a polygon (x, y) of pixel centres."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contour = max(contours, key=cv2.contourArea)
    return contour[:, 0, :].astype(np.float64)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    noise = rng.normal(0.6, 1.0, size=(height, width)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), 1.5)
    canvas = np.clip(noise, 0, None)
    if rng.random() < 0.3:  # an interphase nucleus: a large, smooth, round blob
        radius = int(rng.uniform(30, 60))
        cx, cy = int(rng.uniform(radius, width - radius)), int(rng.uniform(radius, height - radius))
        blob = np.zeros((height, width), np.float32)
        cv2.ellipse(blob, (cx, cy), (radius, int(radius * rng.uniform(0.7, 1.0))), rng.uniform(0, 180), 0, 360, 1, -1)
        blob = cv2.GaussianBlur(blob, (0, 0), radius / 6)
        canvas += blob * rng.uniform(40, 110)
    return canvas


def synthesize_mci(
    icis: list[tuple[str, np.ndarray]],
    rng: np.random.Generator,
    touching: float = DEFAULT_TOUCHING,
    overlapping: float = DEFAULT_OVERLAPPING,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> SyntheticMci:
    """Compose one MCI from (label, ICI) pairs. `touching`/`overlapping`: the share of
    chromosomes placed in contact with / partly over an already placed one."""
    canvas = _background(rng, height, width)
    occupied = np.zeros((height, width), bool)
    masks, labels, placement = [], [], []
    kernel = np.ones((5, 5), np.uint8)
    order = rng.permutation(len(icis))
    # the spread of a metaphase: chromosomes gather in a central region, not the whole frame
    spread_w, spread_h = width * rng.uniform(0.6, 0.85), height * rng.uniform(0.65, 0.9)
    centre_x, centre_y = width / 2 + rng.uniform(-0.08, 0.08) * width, height / 2 + rng.uniform(-0.06, 0.06) * height
    for index in order:
        label, ici = icis[int(index)]
        piece_mask = chromosome_mask(ici)
        piece = np.where(piece_mask, ici, 0).astype(np.uint8)
        angle = float(rng.uniform(0, 360))
        piece = rotate_expand(piece, angle)
        piece_mask = rotate_expand(piece_mask.astype(np.uint8) * 255, angle) > 127
        ys, xs = np.nonzero(piece_mask)
        piece, piece_mask = (
            piece[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1],
            piece_mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1],
        )
        ph, pw = piece_mask.shape
        if ph >= height or pw >= width:
            raise ValueError(f"an ICI of class {label} ({ph}x{pw} px) does not fit a {height}x{width} canvas")
        draw = rng.random()
        wanted = "overlapping" if draw < overlapping else "touching" if draw < overlapping + touching else "free"
        if not masks:
            wanted = "free"
        best: tuple[float, int, int, str] | None = None
        for attempt in range(MAX_TRIES):
            # widen the spread when it is crowded
            widen = 1.0 + attempt / MAX_TRIES
            x = int(np.clip(centre_x + rng.uniform(-0.5, 0.5) * spread_w * widen - pw / 2, 0, width - pw))
            y = int(np.clip(centre_y + rng.uniform(-0.5, 0.5) * spread_h * widen - ph / 2, 0, height - ph))
            window = occupied[y : y + ph, x : x + pw]
            overlap = int((window & piece_mask).sum())
            near = bool((window & (cv2.dilate(piece_mask.astype(np.uint8), kernel) > 0)).any())
            area = int(piece_mask.sum())
            got = "overlapping" if overlap > 0.04 * area else "touching" if near else "free"
            if overlap > 0.3 * area:
                continue  # hidden too much: no annotator could draw it
            if got == wanted:
                best = (0.0, x, y, got)
                break
            if best is None or overlap < best[0]:
                best = (float(overlap), x, y, got)
        assert best is not None
        _, x, y, got = best
        full = np.zeros((height, width), bool)
        full[y : y + ph, x : x + pw] = piece_mask
        region = canvas[y : y + ph, x : x + pw]
        canvas[y : y + ph, x : x + pw] = np.where(piece_mask, np.maximum(region, piece), region)
        occupied |= full
        masks.append(full)
        labels.append(label)
        placement.append(got)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return SyntheticMci(image, masks, labels, [mask_polygon(m) for m in masks], placement)


def labelme_document(mci: SyntheticMci, image_path: str, case: str | None = None, karyotype: str | None = None) -> dict:
    """labelme JSON of a semi-synthetic MCI; `case` and the true `karyotype` (ISCN) go into
    `flags`, where the readers take them from."""
    flags: dict = {"synthetic": True}
    if case is not None:
        flags["case"] = case
    if karyotype is not None:
        flags["karyotype"] = karyotype
    return labelme_json(mci.image, mci.polygons, mci.labels, image_path, flags, mci.placement)


def write_labelme(mci: SyntheticMci, path: Path, case: str | None = None, karyotype: str | None = None) -> None:
    document = labelme_document(mci, path.with_suffix(".png").name, case, karyotype)
    write_atomically(path, json.dumps(document).encode())


def synthesize_folder(
    data_dir: Path,
    cases: list[str],
    out: Path,
    per_cell: int = 1,
    touching: float = DEFAULT_TOUCHING,
    overlapping: float = DEFAULT_OVERLAPPING,
    seed: int = 0,
    abnormal: bool = False,
    progress: Callable[[Iterable[str]], Iterable[str]] = lambda cases: cases,
) -> list[tuple[Path, str]]:
    """`per_cell` semi-synthetic MCIs of each cell, written to `out/mci/original_<case><a..>.json`
    with a README saying how they were made; returns the (file, true ISCN) of each. With
    `abnormal`, every MCI gets the next numerical change of ABNORMAL_CYCLE; a gained copy comes
    from another of the given cells. G-band cells (the G-band ICI layout) are composed in the
    working representation and photographed in brightfield (karyoflow.data.brightfield)."""
    if not 1 <= per_cell <= 26:
        raise ValueError("per_cell must be 1..26 (one letter per picture)")
    rng = np.random.default_rng(seed)
    stain = layout_stain(data_dir)
    cells = {case: [(LABELS[r.class_index], r) for r in read_ici_cell(data_dir, case)] for case in cases}
    written: list[tuple[Path, str]] = []
    for case in progress(cases):
        icis = [(label, record.load()) for label, record in cells[case]]
        for picture in range(per_cell):
            chosen, iscn = icis, cell_iscn([label for label, _ in icis])
            if abnormal:
                change = ABNORMAL_CYCLE[len(written) % len(ABNORMAL_CYCLE)]
                donors: dict[str, list[np.ndarray]] = {}
                if change[0] == "+":
                    records = [r for other in cases if other != case for k, r in cells[other] if k == change[1:]]
                    donors[change[1:]] = [record.load() for record in records]
                chosen, iscn = abnormal_cell(icis, change, donors, rng)
            mci = synthesize_mci(chosen, rng, touching=touching, overlapping=overlapping)
            if stain == "g":
                mci = to_brightfield(mci, rng)
            path = out / "mci" / f"original_{case}{chr(ord('a') + picture)}.json"
            write_labelme(mci, path, case, iscn)
            written.append((path, iscn))
    (out / "README.md").write_text(
        "# Semi-synthetic metaphases\n\n"
        f"Made by `karyo data synth` from the ICIs of {len(cases)} cells of {data_dir} "
        f"(seed {seed}, touching {touching}, overlapping {overlapping}"
        + (", G-band brightfield" if stain == "g" else "")
        + (", one numerical change per MCI" if abnormal else "")
        + "). Each `mci/original_<case><picture>.json` is labelme JSON with the image embedded, one "
        "polygon per chromosome labelled with its class, the cell in `flags.case` and its true "
        "karyotype in `flags.karyotype`.\n"
    )
    return written
