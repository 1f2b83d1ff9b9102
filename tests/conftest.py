"""Shared fixtures and the test layers. Tests read the real BioImLab data; a missing data folder
fails them loudly rather than skipping, so a broken checkout cannot pass.

Every test carries exactly one layer marker (pyproject.toml): `unit` (no services, no training,
no model files; `make test-fast`), `integration` (models, training, CLI, wheel) or `system` (the
service stack). A test with none, or two, stops the run at collection."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: the tests share two cores with the stack's
# workers (and, here, with other jobs), and spinning threads of torch made a training step
# five times slower under that load. Set before anything imports torch; inherited by every
# process a test starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from infra.settings import Settings
from infra.storage import ObjectStore
from service.devstack.stack import Stack, StackConfig
from tests.helpers import offset_port

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("unit", "integration", "system")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: an unmarked test is refused in every run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wrong = []
    for item in items:
        layers = sorted({marker.name for marker in item.iter_markers() if marker.name in LAYERS})
        if len(layers) != 1:
            wrong.append(f"{item.nodeid} ({', '.join(layers) or 'no layer'})")
    if wrong:
        raise pytest.UsageError(
            "every test needs exactly one of the markers unit, integration, system (e.g. "
            "`pytestmark = pytest.mark.unit` in the module or `@pytest.mark.integration` on the test); "
            f"{len(wrong)} tests do not:\n  " + "\n  ".join(wrong)
        )


def _data_dir(env: str, default: Path, name: str = "BioImLab") -> Path:
    path = Path(os.environ.get(env, default))
    if not (path / "ici").is_dir():
        pytest.fail(f"{name} data not found at {path}: set {env}")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _data_dir("KARYO_DATA", REPO.parent / "shared" / "data" / "bioimlab")


@pytest.fixture(scope="session")
def labelled_dir() -> Path:
    return _data_dir("KARYO_LABELLED_DATA", REPO.parent / "shared" / "data" / "bioimlab-labelled")


@pytest.fixture(scope="session")
def gband_dir() -> Path:
    return _data_dir("KARYO_GBAND_DATA", REPO.parent / "shared" / "data" / "gband", "G-band")


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A ChrNet4 trained for a few steps on three cells: real weights, useless accuracy."""
    from karyoflow.classify.train import TrainConfig, train_classifier

    out = tmp_path_factory.mktemp("weights") / "tiny.pt"
    config = TrainConfig(epochs=3, batch_size=16, lr=2e-3, train_cases=["6", "9", "11"], val_cases=["1"], eval_every=1)
    import torch

    meta = train_classifier(data_dir, config, out, torch.device("cpu"), log=lambda *_: None)
    out.with_suffix(".meta").write_text(str(meta["history"]))
    return out


@pytest.fixture(scope="session")
def karyotyper():
    """The pipeline with the committed models on the CPU, loaded once for every test using it."""
    from karyoflow.pipeline import Karyotyper

    return Karyotyper(device="cpu")


# -- the service stack (started once per session, only when a test asks for it) --


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory):
    config = StackConfig(
        state_dir=tmp_path_factory.mktemp("stack"),
        redis_port=offset_port(6391),
        s3_port=offset_port(18333),
        api_port=offset_port(8711),
        flower_port=offset_port(5567),
        database=f"karyoflow_test_{os.getpid()}",
        lost_after_s=10,  # a lost message is the sweeper's after 10 s; a stuck case after the default 900 s
        sweep_interval_s=2,
    )
    stack = Stack(config)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()
        stack.drop_database()


@pytest.fixture(scope="session")
def db(stack: Stack):
    engine = create_engine(stack.env["KARYO_DATABASE_URL"])
    with Session(engine) as session:
        yield session
    engine.dispose()


@pytest.fixture(scope="session")
def store(stack: Stack) -> ObjectStore:
    env = stack.env
    return ObjectStore(
        Settings(
            s3_endpoint=env["KARYO_S3_ENDPOINT"],
            s3_access_key=env["KARYO_S3_ACCESS_KEY"],
            s3_secret_key=env["KARYO_S3_SECRET_KEY"],
        )
    )


# -- a database of its own on the machine's PostgreSQL (tests of the database layer alone) --

POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database on the machine's server, dropped afterwards."""
    name = f"karyoflow_db_{os.getpid()}"
    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    env = {**os.environ, "KARYO_DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "db", "upgrade"], env=env, cwd=REPO, check=True)
    try:
        yield url
    finally:
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
