"""Helpers of the service tests: the stack's ports; upload cells and wait for cases through the
API's client (service.client.http), as a lab's software would."""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import CaseImage, ChromosomeRow
from infra.storage import ObjectStore
from karyoflow.data.bioimlab import read_mci
from service.client.http import Case, CaseTimeout, KaryoflowClient
from service.devstack.stack import Stack

TIMEOUT_S = 420

# Every port a test stack listens on is moved by KARYO_TEST_PORT_OFFSET, so test runs on one
# machine with offsets at least 100 apart do not collide (SeaweedFS's own ports follow its S3
# port).
PORT_OFFSET_ENV = "KARYO_TEST_PORT_OFFSET"


def port_offset() -> int:
    text = os.environ.get(PORT_OFFSET_ENV, "0")
    try:
        offset = int(text)
    except ValueError:
        raise ValueError(f"{PORT_OFFSET_ENV}={text!r} is not a whole number") from None
    if not 0 <= offset <= 1000:
        raise ValueError(f"{PORT_OFFSET_ENV}={offset}: want 0..1000 (every test port is moved by it)")
    return offset


def offset_port(base: int) -> int:
    """`base` moved by the run's port offset."""
    return base + port_offset()


def gband_metaphase(gband_dir: Path, cell: str, seed: int):
    """A semi-synthetic brightfield G-band metaphase (H x W uint8) of one real cell's chromosomes."""
    import numpy as np

    from karyoflow.data.brightfield import to_brightfield
    from karyoflow.data.icis import read_ici_cell
    from karyoflow.data.synth import synthesize_mci
    from karyoflow.labels import LABELS

    records = read_ici_cell(gband_dir, cell)
    rng = np.random.default_rng(seed)
    composed = synthesize_mci([(LABELS[r.class_index], r.load()) for r in records], rng, touching=0.1, overlapping=0.0)
    return to_brightfield(composed, rng).image


def png_of(path: Path) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(read_mci(path).image).save(buffer, format="PNG")
    return buffer.getvalue()


def client(stack: Stack, key: str) -> KaryoflowClient:
    return KaryoflowClient(stack.api_url, key)


def submit(stack: Stack, key: str, paths: list[Path], reference: str = "") -> str:
    with client(stack, key) as api:
        return api.submit_case([(p.stem + ".png", png_of(p)) for p in paths], reference)["id"]


def wait_done(stack: Stack, key: str, case_ids: list[str], timeout: float = TIMEOUT_S) -> dict[str, Case]:
    with client(stack, key) as api:
        try:
            cases = api.wait_finished(case_ids, timeout)
        except CaseTimeout as error:
            raise AssertionError(str(error)) from None
    assert all(c["status"] == "done" for c in cases.values()), {
        k: (c["status"], c.get("error")) for k, c in cases.items()
    }
    return cases


def wait_status(stack: Stack, key: str, case_id: str, status: str, timeout: float = 120) -> None:
    with client(stack, key) as api:
        try:
            api.wait_status(case_id, status, timeout)
        except CaseTimeout:
            raise AssertionError(f"case {case_id} never reached {status}") from None


def assert_one_result_set(db: Session, store: ObjectStore, case: dict) -> None:
    """The case's images each have one set of chromosome rows (no duplicates, no gaps) and
    every object those rows, the report and the karyogram name."""
    db.expire_all()
    for image in case["images"]:
        row = db.scalar(
            select(CaseImage).where(CaseImage.case_id == case["id"], CaseImage.position == image["position"])
        )
        numbers = db.scalars(select(ChromosomeRow.number).where(ChromosomeRow.image_id == row.id)).all()
        assert sorted(numbers) == list(range(1, image["chromosome_count"] + 1))  # no duplicates, no gaps
        keys = set(store.list(row.object_key.rsplit("/", 1)[0] + "/"))
        assert {row.object_key, row.report_key, row.karyogram_key} <= keys
        rows = db.scalars(select(ChromosomeRow).where(ChromosomeRow.image_id == row.id)).all()
        assert {r.ici_key for r in rows} <= keys and {r.mask_key for r in rows} <= keys


def wait_ready(stack: Stack, timeout: float = 90) -> None:
    """Until the API's readiness says every dependency is back."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if httpx.get(f"{stack.api_url}/health/ready", timeout=30).status_code == 200:
            return
        time.sleep(1)
    raise AssertionError(f"not ready after {timeout} s")


ARTIFACTS = Path(os.environ.get("KARYO_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "out" / "test-artifacts"))
CHROMIUM = "/usr/bin/chromium"


@contextmanager
def logged_in_page(url: str, key: str, width: int, height: int) -> Iterator:
    """A Chromium page (Debian's, driven by Playwright) that opened `url`, a page behind the
    clinic login, and sent the login form with `key`; the form returns to `url`. Screenshots
    belong in ARTIFACTS, which exists."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.fail("Chromium is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url)
            page.fill("#key", key)
            page.click("button[type=submit]")
            yield page
        finally:
            browser.close()
