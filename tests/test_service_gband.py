"""A G-band case through the whole service: upload with the stain left to detection, the workers
route it to the G-band classifier, the image records its stain, the report says it and the
karyogram is drawn dark on light. Uses the committed G-band ChrNet4 (models/chrnet4-gband.pt)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from karyoflow.report import validate_report
from service.devstack.stack import Stack
from tests.helpers import client, gband_metaphase, wait_done

pytestmark = pytest.mark.system


def brightfield_png(gband_dir: Path, cell: str, seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gband_metaphase(gband_dir, cell, seed)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_gband_case_flows_through_the_service(stack: Stack, gband_dir: Path) -> None:
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
