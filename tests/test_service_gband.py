"""A G-band case through the whole service: upload with the stain left to detection, the workers
route it to the G-band classifier, the image records its stain, the report says it and the
karyogram is drawn dark on light. Uses the committed G-band ChrNet4 (models/chrnet4-gband.pt)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from karyoflow.data.brightfield import to_brightfield
from karyoflow.data.icis import read_ici_cell
from karyoflow.data.synth import synthesize_mci
from karyoflow.labels import LABELS
from karyoflow.report import validate_report
from service.devstack.stack import Stack
from tests.helpers import client, wait_done

pytestmark = pytest.mark.system
REPO = Path(__file__).resolve().parents[1]


def brightfield_png(gband_dir: Path, cell: str, seed: int) -> bytes:
    records = read_ici_cell(gband_dir, cell)
    rng = np.random.default_rng(seed)
    composed = synthesize_mci([(LABELS[r.class_index], r.load()) for r in records], rng, touching=0.1, overlapping=0.0)
    buffer = io.BytesIO()
    Image.fromarray(to_brightfield(composed, rng).image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_gband_case_flows_through_the_service(stack: Stack) -> None:
    gband_dir = Path(os.environ.get("KARYO_GBAND_DATA", REPO.parent / "shared" / "data" / "gband"))
    key = stack.create_clinic("G-band lab")
    with client(stack, key) as api:
        created = api.submit_case([("metaphase.png", brightfield_png(gband_dir, "97002069.20", 5))], "G-1")
    case = wait_done(stack, key, [created["id"]])[created["id"]]
    assert case["stain"] == "auto"
    image = case["images"][0]
    assert image["stain"] == "g" and image["chromosome_count"] >= 40
    with client(stack, key) as api:
        (report,) = api.reports(created["id"])
        karyogram = api.karyogram(created["id"])
    validate_report(report)
    assert report["stain"] == "g" and report["models"]["classifier"]["file"] == "chrnet4-gband.pt"
    assert report["models"]["classifier"]["stain"] == "g"
    with Image.open(io.BytesIO(karyogram)) as page:
        assert np.median(np.asarray(page.convert("L"))) > 200  # dark on light, as G-band is read
