"""Semi-synthetic metaphases composed from one cell's labelled ICIs.

For most BioImLab cells the ICIs were cut from another picture than the MCI, so real MCIs of
those cells have no class labels. A semi-synthetic MCI places the cell's 46 real ICIs at random
positions and angles on a 768 x 576 canvas, at their native scale (same microscope and camera as
the MCIs), with a controlled share of chromosomes touching or overlapping another one, a faint
background like the real images' and, sometimes, an interphase-nucleus-like blob as a distractor.
Overlapping chromosomes are combined with a maximum (fluorescence of the upper one dominates),
and each keeps its full mask, as in the real annotations.

Written as labelme JSON (`mci/original_<case><a..>.json`, image embedded, one polygon per
chromosome labelled with its class), so every reader, `karyo eval karyotype` included, takes it
like a real MCI.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from karyoflow.data.bioimlab import load_grey, read_ici_case
from karyoflow.files import write_atomically
from karyoflow.labels import LABELS
from karyoflow.straighten import FOREGROUND_LEVEL, rotate_expand

WIDTH, HEIGHT = 768, 576
MAX_TRIES = 300


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
    touching: float = 0.15,
    overlapping: float = 0.05,
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


def labelme_document(mci: SyntheticMci, image_path: str) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(mci.image).save(buffer, format="PNG")
    return {
        "version": "5.2.1",
        "flags": {"synthetic": True},
        "shapes": [
            {
                "label": label,
                "points": [[float(x), float(y)] for x, y in polygon],
                "group_id": None,
                "shape_type": "polygon",
                "flags": {},
                "description": placement,
            }
            for label, polygon, placement in zip(mci.labels, mci.polygons, mci.placement, strict=True)
        ],
        "imagePath": image_path,
        "imageData": base64.b64encode(buffer.getvalue()).decode("ascii"),
        "imageHeight": int(mci.image.shape[0]),
        "imageWidth": int(mci.image.shape[1]),
    }


def write_labelme(mci: SyntheticMci, path: Path) -> None:
    write_atomically(path, json.dumps(labelme_document(mci, path.with_suffix(".png").name)).encode())


def synthesize_folder(
    data_dir: Path,
    cases: list[str],
    out: Path,
    per_cell: int = 1,
    touching: float = 0.15,
    overlapping: float = 0.05,
    seed: int = 0,
    progress: Callable[[Iterable[str]], Iterable[str]] = lambda cases: cases,
) -> int:
    """`per_cell` semi-synthetic MCIs of each cell, written to `out/mci/original_<case><a..>.json`
    with a README saying how they were made; returns how many were written."""
    if not 1 <= per_cell <= 26:
        raise ValueError("per_cell must be 1..26 (one letter per picture)")
    rng = np.random.default_rng(seed)
    written = 0
    for case in progress(cases):
        icis = [(LABELS[r.class_index], load_grey(r.path)) for r in read_ici_case(data_dir, case)]
        for picture in range(per_cell):
            mci = synthesize_mci(icis, rng, touching=touching, overlapping=overlapping)
            write_labelme(mci, out / "mci" / f"original_{case}{chr(ord('a') + picture)}.json")
            written += 1
    (out / "README.md").write_text(
        "# Semi-synthetic metaphases\n\n"
        f"Made by `karyo data synth` from the ICIs of {len(cases)} cells of {data_dir} "
        f"(seed {seed}, touching {touching}, overlapping {overlapping}). "
        "Each `mci/original_<case><picture>.json` is labelme JSON with the image embedded and one "
        "polygon per chromosome labelled with its class.\n"
    )
    return written
