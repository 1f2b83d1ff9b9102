"""Karyogram image in the standard layout.

Rows as cytogeneticists arrange them: 1-5; 6-12 and X; 13-18; 19-20, 21-22 and Y. Every
chromosome is drawn straightened at one common scale for the whole cell (relative size is
information), homologues side by side under their class label; a chromosome whose class is
uncertain (assigned probability < 0.5, or moved by the karyotype assignment away from the
classifier's first choice) gets a red frame and a "?". Q-band chromosomes are bright on dark,
so their page is dark too; G-band chromosomes are drawn dark on a light page, as labs read them.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from karyoflow.karyotype import CLINICAL_NOTE
from karyoflow.stain import Stain, for_display

ROWS: tuple[tuple[tuple[str, ...], ...], ...] = (
    (("1", "2", "3", "4", "5"),),
    (("6", "7", "8", "9", "10", "11", "12"), ("X",)),
    (("13", "14", "15", "16", "17", "18"),),
    (("19", "20"), ("21", "22"), ("Y",)),
)
PAGE_WIDTH = 1400
MARGIN = 24
GAP = 6  # between homologues
LABEL_HEIGHT = 24
HEADER_HEIGHT = 86
TALLEST = 130  # pixels the tallest chromosome of the cell is drawn at (capped at 2x native)
BACKGROUND = (24, 24, 28)
TEXT = (235, 235, 235)
LOW = (230, 60, 50)
# the page of a G-band karyogram: light, with dark text (chromosomes are dark on white)
LIGHT_BACKGROUND = (255, 255, 255)
DARK_TEXT = (20, 20, 24)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without scalable default font
        return ImageFont.load_default()


def render_karyogram(
    chromosomes: list[tuple[str, np.ndarray, bool]], title: str, karyotype: str, count: int, stain: Stain = "q"
) -> Image.Image:
    """`chromosomes`: (label, straightened uint8 image in the working representation, i.e.
    bright on dark, low_confidence) in any order; drawn in the stain's own polarity."""
    background, text_colour = (LIGHT_BACKGROUND, DARK_TEXT) if stain == "g" else (BACKGROUND, TEXT)
    chromosomes = [(label, for_display(image, stain), low) for label, image, low in chromosomes]
    groups: dict[str, list[tuple[np.ndarray, bool]]] = {}
    for label, image, low in chromosomes:
        groups.setdefault(label, []).append((image, low))
    tallest = max((image.shape[0] for _, image, _ in chromosomes), default=1)
    scale = min(2.0, TALLEST / max(tallest, 1))
    row_height = int(np.ceil(tallest * scale)) + LABEL_HEIGHT + 18

    height = HEADER_HEIGHT + len(ROWS) * row_height + MARGIN
    page = Image.new("RGB", (PAGE_WIDTH, height), background)
    draw = ImageDraw.Draw(page)
    draw.text((MARGIN, 14), title, fill=text_colour, font=_font(20))
    draw.text((MARGIN, 40), f"{karyotype}   ({count} chromosomes found)", fill=text_colour, font=_font(22))
    draw.text((MARGIN, 66), CLINICAL_NOTE, fill=(170, 170, 170), font=_font(12))

    def scaled(image: np.ndarray) -> Image.Image:
        h, w = image.shape
        size = (max(int(round(w * scale)), 1), max(int(round(h * scale)), 1))
        return Image.fromarray(image).resize(size, Image.Resampling.BILINEAR).convert("RGB")

    for r, row in enumerate(ROWS):
        top = HEADER_HEIGHT + r * row_height
        bottom = top + row_height - LABEL_HEIGHT
        labels = [label for block in row for label in block]
        slot_width = (PAGE_WIDTH - 2 * MARGIN) / len(labels)
        for i, label in enumerate(labels):
            members = groups.get(label, [])
            tiles = [(scaled(image), low) for image, low in members]
            width = sum(t.width for t, _ in tiles) + GAP * max(len(tiles) - 1, 0)
            x = int(MARGIN + slot_width * i + (slot_width - width) / 2)
            for tile, low in tiles:
                y = bottom - tile.height - 4  # chromosomes stand on a common baseline
                page.paste(tile, (x, y))
                if low:
                    draw.rectangle((x - 2, y - 2, x + tile.width + 1, y + tile.height + 1), outline=LOW, width=2)
                    draw.text((x + tile.width - 4, y - 16), "?", fill=LOW, font=_font(14))
                x += tile.width + GAP
            centre = MARGIN + slot_width * (i + 0.5)
            draw.line((centre - slot_width * 0.4, bottom, centre + slot_width * 0.4, bottom), fill=(110, 110, 110))
            expected = {"X": (1, 2), "Y": (0, 1)}.get(label, (2,))
            text = label if len(members) in expected else f"{label} ({len(members)})"
            draw.text((centre, bottom + 4), text, fill=text_colour, font=_font(16), anchor="ma")
    return page
