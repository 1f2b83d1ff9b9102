from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.main import app
from db import session as db_session
from db.admin import create_clinic
from db.migrate import upgrade
from infra.settings import get_settings
from karyoflow.data.bioimlab import read_ici_case

pytestmark = pytest.mark.integration

client = TestClient(app)


def _clear_cached_settings() -> None:
    get_settings.cache_clear()
    db_session.get_sessionmaker.cache_clear()
    db_session.get_engine.cache_clear()


@pytest.fixture(scope="module")
def api_key(tmp_path_factory: pytest.TempPathFactory):
    """A clinic's key in a fresh, migrated SQLite database (the embedded mode's database)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('api-db') / 'karyoflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KARYO_DATABASE_URL", url)
        _clear_cached_settings()
        upgrade()
        _clinic_id, key = create_clinic("API test clinic")
        yield key
        db_session.get_engine().dispose()
    _clear_cached_settings()


def _png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_classify_a_cell_through_the_api(labelled_dir: Path, api_key: str) -> None:
    records = read_ici_case(labelled_dir, "2")
    files = [("files", (r.path.name, r.path.read_bytes(), "image/bmp")) for r in records]
    response = client.post("/v1/icis/classify", files=files, headers={"X-API-Key": api_key})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["n"] == 46
    labels = [item["label"] for item in body["icis"]]
    truth = [("X" if r.class_index == 22 else "Y" if r.class_index == 23 else str(r.class_index + 1)) for r in records]
    assert sum(a == b for a, b in zip(labels, truth, strict=True)) >= 38
    assert client.get("/health").json() == {"status": "ok", "classifier_loaded": True}


def test_ici_classification_needs_a_key(labelled_dir: Path, api_key: str) -> None:
    record = read_ici_case(labelled_dir, "2")[0]
    files = [("files", (record.path.name, record.path.read_bytes(), "image/bmp"))]
    assert client.post("/v1/icis/classify", files=files).status_code == 401
    wrong = client.post("/v1/icis/classify", files=files, headers={"X-API-Key": "kf_not-a-key"})
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.text


def test_bad_uploads_get_4xx_with_a_reason(api_key: str) -> None:
    headers = {"X-API-Key": api_key}

    def post(name: str, data: bytes, content_type: str = "image/png"):
        return client.post("/v1/icis/classify", files=[("files", (name, data, content_type))], headers=headers)

    not_image = post("a.bmp", b"hello", "image/bmp")
    assert not_image.status_code == 422 and "a.bmp: not a readable" in not_image.text
    black = post("b.png", _png(np.zeros((40, 20), np.uint8)))
    assert black.status_code == 422 and "b.png: the image is empty" in black.text
    white = post("w.png", _png(np.full((40, 20), 255, np.uint8)))  # G-band's background and nothing on it
    assert white.status_code == 422 and "w.png: the image is empty" in white.text
    banded = np.full((2, 30), 200, np.uint8)
    banded[:, ::3] = 40
    tiny = post("c.png", _png(banded))
    assert tiny.status_code == 422 and "too small for a chromosome image" in tiny.text
    gif = io.BytesIO()
    Image.fromarray(np.full((40, 20), 200, np.uint8)).save(gif, format="GIF")
    assert post("d.gif", gif.getvalue(), "image/gif").status_code == 415
    nothing = client.post("/v1/icis/classify", headers=headers)
    assert nothing.status_code == 422


def test_dependencies_down_give_503_with_reasons(tmp_path: Path) -> None:
    """Nothing listens on port 1 (real refused connections, no mocks): readiness says which
    dependency is down (the reasons stay in the server: the probe needs no key); a request that
    needs the database gets a 503, not a 500; liveness stays up. The checks themselves give the
    reasons, also for an SQLite database that is missing, unmigrated or behind the code."""
    import sqlite3

    from api.readiness import check_dependencies

    dead = {
        "KARYO_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/karyoflow",
        "KARYO_REDIS_URL": "redis://127.0.0.1:1/0",
        "KARYO_S3_ENDPOINT": "127.0.0.1:1",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in dead.items():
            patch.setenv(name, value)
        _clear_cached_settings()
        try:
            response = client.get("/health/ready")
            assert response.status_code == 503
            assert response.json() == {
                "status": "unavailable",
                "checks": {"database": "unavailable", "redis": "unavailable", "object_storage": "unavailable"},
            }
            reasons = check_dependencies(get_settings())
            assert "OperationalError" in reasons["database"] and "refused" in reasons["database"]
            assert "ConnectionError" in reasons["redis"]
            assert "refused" in reasons["object_storage"]
            cases = client.get("/v1/cases", headers={"X-API-Key": "kf_any"})
            assert cases.status_code == 503 and cases.json()["detail"] == "database unavailable; try again shortly"
            assert client.get("/health").status_code == 200

            database = tmp_path / "karyoflow.db"
            patch.setenv("KARYO_DATABASE_URL", f"sqlite:///{database}")
            _clear_cached_settings()
            assert "no database file" in check_dependencies(get_settings())["database"]
            assert not database.exists()  # the probe did not create it
            sqlite3.connect(database).close()
            assert "no Alembic revision" in check_dependencies(get_settings())["database"]
            with sqlite3.connect(database) as connection:
                connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
                connection.execute("INSERT INTO alembic_version VALUES ('0000_older')")
            assert "schema at revision 0000_older" in check_dependencies(get_settings())["database"]
        finally:
            db_session.get_engine().dispose()
    _clear_cached_settings()


def test_the_migrations_build_the_models_schema_on_sqlite(tmp_path: Path) -> None:
    """Alembic's autogenerate finds nothing to add after `upgrade` (models and migrations agree;
    the PostgreSQL counterpart runs against the service stack's database)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from db.models import Base

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KARYO_DATABASE_URL", f"sqlite:///{tmp_path / 'migrated.db'}")
        _clear_cached_settings()
        try:
            upgrade()
            with db_session.get_engine().connect() as connection:
                assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        finally:
            db_session.get_engine().dispose()
    _clear_cached_settings()
