from __future__ import annotations

import io
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from api.main import app
from karyoflow.data.bioimlab import read_ici_case

client = TestClient(app)


def _png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_classify_a_cell_through_the_api(labelled_dir: Path) -> None:
    records = read_ici_case(labelled_dir, "2")
    files = [("files", (r.path.name, r.path.read_bytes(), "image/bmp")) for r in records]
    response = client.post("/v1/icis/classify", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["n"] == 46
    labels = [item["label"] for item in body["icis"]]
    truth = [("X" if r.class_index == 22 else "Y" if r.class_index == 23 else str(r.class_index + 1)) for r in records]
    assert sum(a == b for a, b in zip(labels, truth, strict=True)) >= 38
    assert client.get("/health").json() == {"status": "ok", "classifier_loaded": True}


def test_bad_uploads_get_4xx_with_a_reason() -> None:
    not_image = client.post("/v1/icis/classify", files=[("files", ("a.bmp", b"hello", "image/bmp"))])
    assert not_image.status_code == 422 and "not a readable image" in not_image.text
    import numpy as np

    black = client.post(
        "/v1/icis/classify", files=[("files", ("b.png", _png(np.zeros((40, 20), np.uint8)), "image/png"))]
    )
    assert black.status_code == 422 and "no chromosome" in black.text
    nothing = client.post("/v1/icis/classify")
    assert nothing.status_code == 422
