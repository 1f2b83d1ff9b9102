"""Reviewed metaphases as training data: `karyo cases export --labelme DIR [--since T]` writes
every metaphase of the clinic's signed-off cases as a labelme file (the image embedded, one
polygon per chromosome labelled with its reviewed class, the reviewed karyotype in
`flags.karyotype`), readable by `karyo train segment --extra-data DIR` and `karyo eval
karyotype --data DIR`. Each metaphase is its own cell, `<case id>.<position>`, so it can never
be taken for a cell of the validation split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from karyoflow.data.labelme import labelme_document
from karyoflow.files import write_atomically
from karyoflow.pipeline import grey_from_bytes
from service.client.http import KaryoflowClient

PAGE = 100  # cases per request


def metaphase_document(metaphase: dict[str, Any], original_png: bytes) -> dict:
    """The labelme document of one reviewed metaphase (as `GET /v1/reviewed-metaphases` gives it)."""
    cell = f"{metaphase['case_id']}.{metaphase['position']}"
    shapes = [c for c in metaphase["chromosomes"] if len(c["outline"]) >= 3]
    flags = {
        "case": cell,
        "karyotype": metaphase["karyotype"],
        "reference": metaphase["reference"],
        "reviewed_by": metaphase["signed_by"],
        "signed_at": metaphase["signed_at"],
        "source": metaphase["filename"],
    }
    return labelme_document(
        grey_from_bytes(original_png),
        [c["outline"] for c in shapes],
        [c["label"] for c in shapes],
        f"{cell}.png",
        flags,
        [c["origin"] for c in shapes],
    )


def export_labelme(client: KaryoflowClient, out_dir: Path, since: str | None = None) -> list[Path]:
    """Write every reviewed metaphase signed off at or after `since` to `out_dir`; the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    while True:
        page = client.reviewed_metaphases(since=since, limit=PAGE)
        fresh = [m for m in page if f"{m['case_id']}.{m['position']}" not in written]
        for metaphase in fresh:
            cell = f"{metaphase['case_id']}.{metaphase['position']}"
            document = metaphase_document(metaphase, client.original(metaphase["case_id"], metaphase["position"]))
            path = out_dir / f"{cell}.json"
            write_atomically(path, json.dumps(document).encode())
            written[cell] = path
        if not fresh or len({m["case_id"] for m in page}) < PAGE:
            return list(written.values())
        since = page[-1]["signed_at"]  # the next page starts at the last sign-off seen
