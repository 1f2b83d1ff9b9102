"""A non-editable install works on its own: the wheel carries the weights, their cards, the split
and the schemas, and its `karyo run` finds the models from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "models", "splits", "karyoflow", "infra", "db", "workers", "api",
           "service")  # fmt: skip
SHIPPED = {
    "karyoflow/models/chrnet4.pt",
    "karyoflow/models/chrnet4.md",
    "karyoflow/models/chrrender.pt",
    "karyoflow/models/chrrender.md",
    "karyoflow/splits/bioimlab.json",
    "karyoflow/schemas/report.schema.json",
    "api/templates/dashboard.html",
    "db/alembic.ini",
    "db/migrations/env.py",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # built from a copy of what the build reads, so the checkout gets no build/ or egg-info
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("karyoflow-*.whl")
    return path


def test_the_wheel_carries_weights_split_and_schemas(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert SHIPPED <= names, SHIPPED - names
        for name in ("chrnet4.pt", "chrrender.pt"):
            assert archive.getinfo(f"karyoflow/models/{name}").file_size == (REPO / "models" / name).stat().st_size
    assert not {name for name in names if name.startswith(("tests/", "models/", "splits/"))}


def test_karyo_run_of_the_installed_wheel_from_another_folder(wheel: Path, labelled_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # -S: no .pth files, so the checkout's editable install is invisible; the project venv's
    # site-packages only lends the dependencies (torch and the rest)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KARYO_")},
        "PYTHONPATH": os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]]),
    }
    where = subprocess.run(
        [sys.executable, "-S", "-c", "import karyoflow.resources as r; print(r.default_classifier_weights())"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()) == target / "karyoflow" / "models" / "chrnet4.pt"
    mci = labelled_dir / "mci" / "original_1.json"
    run = subprocess.run(
        [sys.executable, "-S", str(target / "bin" / "karyo"), "run", str(mci), "--out", "out", "--quiet"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    karyogram = elsewhere / "out" / "original_1.png"
    assert karyogram.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (elsewhere / "out" / "original_1.json").is_file()
    assert "original_1.json" in run.stdout and "chromosomes" in run.stdout
