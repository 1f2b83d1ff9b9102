"""What a review produces besides the case itself: the case report as PDF, and a reviewed
metaphase as a labelme file the training and evaluation readers take back."""

from __future__ import annotations

import io
import json
import re
import zlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from api.pages import safe_next
from karyoflow.case_report import NOT_REVIEWED, CaseReport, ReportMetaphase, case_report_pdf
from karyoflow.data.bioimlab import read_mci
from karyoflow.joint_eval import true_karyotype
from service.client.export import metaphase_document

pytestmark = pytest.mark.unit


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _pdf_text(pdf: bytes) -> str:
    """The text drawn in a PDF (fpdf2 compresses each page's content stream)."""
    assert pdf.startswith(b"%PDF-")
    streams = re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S)
    shown = []
    for stream in streams:
        try:
            content = zlib.decompress(stream).decode("latin-1")
        except zlib.error:
            continue
        if "BT" in content and "Tj" in content:  # a page's content, not an image
            shown += re.findall(r"\(((?:[^()\\]|\\.)*)\)\s*Tj", content)
    return "".join(shown)


def _report(signed: bool) -> CaseReport:
    return CaseReport(
        case_id="c0ffee",
        reference="P-17",
        karyotype="mos 47,XX,+21[2]/46,XX[1]",
        cells_analysed=3,
        cell_lines=[("47,XX,+21", 2), ("46,XX", 1)],
        non_clonal=["+8 in metaphase 3"],
        reasons=["cell lines differ"],
        metaphases=[
            ReportMetaphase(
                i, f"m{i}.png", "47,XX,+21", "47,XX,+21", False, 0, _png(np.full((400, 700, 3), 40 + i, np.uint8))
            )
            for i in range(3)
        ]
        + [ReportMetaphase(3, "m3.png", "45,XX,-4", "45,XX,-4", True, 1, None)],
        models=["classifier chrnet4.pt sha256 0123456789ab (Q-band)"],
        signed_by="Dr. Rossi" if signed else None,
        signed_at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC) if signed else None,
        generated_at=datetime(2026, 12, 1, 10, 0, tzinfo=UTC),
        corrections=1,
    )


def test_the_pdf_report_says_not_reviewed_until_signed() -> None:
    unsigned = _pdf_text(case_report_pdf(_report(signed=False)))
    assert NOT_REVIEWED.split(":")[0] in unsigned
    assert "mos 47,XX,+21[2]/46,XX[1]" in unsigned and "Cells analysed: 3 of 4 metaphases" in unsigned
    assert "excluded from the consensus" in unsigned and "chrnet4.pt sha256 0123456789ab" in unsigned
    signed_pdf = case_report_pdf(_report(signed=True))
    signed = _pdf_text(signed_pdf)
    assert "NOT REVIEWED" not in signed
    assert "signed off by Dr. Rossi at 2026-12-01 09:30 UTC" in signed
    assert signed_pdf.count(b"/Subtype /Image") == 3  # the three karyograms


def test_an_exported_metaphase_reads_back_with_the_reviewed_labels(tmp_path: Path) -> None:
    image = np.zeros((60, 80), np.uint8)
    image[10:40, 10:20] = 180
    image[10:30, 40:50] = 160
    metaphase = {
        "case_id": "5e1f",
        "reference": "2",  # a reference like a validation cell's name: the cell is the case id, not it
        "position": 1,
        "filename": "slide.tif",
        "karyotype": "47,XY,+21",
        "signed_by": "Dr. Rossi",
        "signed_at": "2026-12-01T09:30:00+00:00",
        "chromosomes": [
            {"number": 1, "label": "1", "origin": "detected", "outline": [[10, 10], [19, 10], [19, 39], [10, 39]]},
            {"number": 3, "label": "21", "origin": "split", "outline": [[40, 10], [49, 10], [49, 29], [40, 29]]},
            {"number": 4, "label": "5", "origin": "split", "outline": [[1, 1], [2, 2]]},  # no area: left out
        ],
    }
    path = tmp_path / "5e1f.1.json"
    path.write_text(json.dumps(metaphase_document(metaphase, _png(image))))
    mci = read_mci(path)
    assert (mci.case, mci.labels, mci.karyotype) == ("5e1f.1", ["1", "21"], "47,XY,+21")
    assert (mci.image == image).all() and mci.polygons[1].tolist()[0] == [40.0, 10.0]
    assert true_karyotype(tmp_path, mci) == "47,XY,+21"


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/cases/abc", "/cases/abc"), ("https://evil.example/", "/cases"), ("//evil.example", "/cases"), (None, "/cases")],
)
def test_login_goes_on_to_a_page_of_this_site_only(path: str | None, expected: str) -> None:
    assert safe_next(path, "/cases") == expected
