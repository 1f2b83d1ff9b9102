"""A case's report as a PDF (fpdf2): the consensus ISCN, the cells analysed, each metaphase's
call and karyogram, the model versions, and the reviewer and time of the sign-off, or "not
reviewed" in red on every page until a person has signed. The same `CaseReport` feeds the
printable HTML page of the service."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime

from fpdf import FPDF

NOT_REVIEWED = "NOT REVIEWED: automated analysis, not signed off by a cytogeneticist; not for clinical use."


@dataclass(frozen=True)
class ReportMetaphase:
    position: int
    filename: str
    machine_karyotype: str | None
    karyotype: str | None  # as it stands (the reviewer's where corrected)
    excluded: bool
    corrections: int
    karyogram_png: bytes | None


@dataclass(frozen=True)
class CaseReport:
    case_id: str
    reference: str
    karyotype: str | None  # the consensus
    cells_analysed: int
    cell_lines: list[tuple[str, int]]
    non_clonal: list[str]  # "+21 in 3"
    reasons: list[str]  # why the consensus needs review
    metaphases: list[ReportMetaphase]
    models: list[str]  # "classifier chrnet4.pt sha256 1a2b3c4d5e6f (Q-band)"
    signed_by: str | None
    signed_at: datetime | None
    generated_at: datetime
    corrections: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def signed(self) -> bool:
        return self.signed_by is not None and self.signed_at is not None

    @property
    def sign_off_line(self) -> str:
        if self.signed:
            return f"Reviewed and signed off by {self.signed_by} at {self.signed_at:%Y-%m-%d %H:%M} UTC"
        return NOT_REVIEWED


def _text(value: str) -> str:
    """fpdf2's core fonts are Latin-1: anything else becomes '?'."""
    return value.encode("latin-1", "replace").decode("latin-1")


class _Document(FPDF):
    def __init__(self, report: CaseReport) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.report = report
        self.set_auto_page_break(auto=True, margin=18)

    def header(self) -> None:
        self.set_font("Helvetica", "B", 9)
        self.set_text_color(90, 90, 90)
        self.cell(0, 5, _text(f"Karyoflow case report - {self.report.reference or self.report.case_id}"))
        self.ln(6)
        if not self.report.signed:
            self.set_text_color(200, 30, 30)
            self.cell(0, 5, NOT_REVIEWED)
            self.ln(7)
        self.set_text_color(0, 0, 0)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", "", 8)
        self.set_text_color(120, 120, 120)
        self.cell(0, 5, _text(f"case {self.report.case_id} - page {self.page_no()}/{{nb}}"), align="C")


def case_report_pdf(report: CaseReport) -> bytes:
    pdf = _Document(report)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    def line(text: str, size: float = 10, style: str = "", height: float = 5.5) -> None:
        pdf.set_font("Helvetica", style, size)
        pdf.multi_cell(width, height, _text(text))

    line("Chromosome analysis", 16, "B", 9)
    line(f"Reference: {report.reference or '-'}    Case: {report.case_id}")
    line(f"Karyotype (consensus): {report.karyotype or 'none: no metaphase analysed'}", 13, "B", 8)
    line(f"Cells analysed: {report.cells_analysed} of {len(report.metaphases)} metaphases")
    if len(report.cell_lines) > 1:
        line("Cell lines: " + ", ".join(f"{iscn} in {n}" for iscn, n in report.cell_lines))
    if report.non_clonal:
        line("Non-clonal changes (not part of the karyotype): " + ", ".join(report.non_clonal))
    if report.reasons:
        line("Flagged for review: " + "; ".join(report.reasons))
    line(f"Corrections by the reviewer: {report.corrections}")
    pdf.set_text_color(*((0, 110, 0) if report.signed else (200, 30, 30)))
    line(report.sign_off_line, 10, "B")
    pdf.set_text_color(0, 0, 0)
    line("Models: " + ("; ".join(report.models) or "-"), 8)
    line(f"Generated {report.generated_at:%Y-%m-%d %H:%M} UTC", 8)
    for note in report.notes:
        line(note, 8)
    for metaphase in report.metaphases:
        pdf.ln(3)
        status = "excluded from the consensus" if metaphase.excluded else "analysed"
        call = metaphase.karyotype or "-"
        if metaphase.corrections:
            call += f" (reviewed; automated call {metaphase.machine_karyotype}, {metaphase.corrections} corrections)"
        line(f"Metaphase {metaphase.position + 1}: {metaphase.filename} - {status} - {call}", 10, "B")
        if metaphase.karyogram_png:
            image = io.BytesIO(metaphase.karyogram_png)
            if pdf.get_y() + width * 0.62 > pdf.h - 18:
                pdf.add_page()
            pdf.image(image, x=pdf.l_margin, w=width)
    return bytes(pdf.output())
