"""Helpers of the service tests: the stack's ports, upload cells, wait for cases."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import httpx
from PIL import Image

from karyoflow.data.bioimlab import read_mci
from service.stack import Stack

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


def png_of(path: Path) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(read_mci(path).image).save(buffer, format="PNG")
    return buffer.getvalue()


def submit(stack: Stack, key: str, paths: list[Path], reference: str = "") -> str:
    files = [("files", (p.stem + ".png", png_of(p), "image/png")) for p in paths]
    response = httpx.post(
        f"{stack.api_url}/v1/cases", files=files, data={"reference": reference}, headers={"X-API-Key": key}, timeout=60
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_done(stack: Stack, key: str, case_ids: list[str], timeout: float = TIMEOUT_S) -> dict[str, dict]:
    deadline = time.time() + timeout
    cases: dict[str, dict] = {}
    while time.time() < deadline:
        cases = {
            case_id: httpx.get(f"{stack.api_url}/v1/cases/{case_id}", headers={"X-API-Key": key}, timeout=30).json()
            for case_id in case_ids
        }
        if all(c["status"] in ("done", "failed") for c in cases.values()):
            break
        time.sleep(1)
    assert all(c["status"] == "done" for c in cases.values()), {
        k: (c["status"], c.get("error")) for k, c in cases.items()
    }
    return cases


def wait_status(stack: Stack, key: str, case_id: str, status: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        now = httpx.get(f"{stack.api_url}/v1/cases/{case_id}", headers={"X-API-Key": key}, timeout=30).json()
        if now["status"] == status:
            return
        time.sleep(0.2)
    raise AssertionError(f"case {case_id} never reached {status}")
