"""docker-compose.yml is valid (Debian's docker-compose) and has every service the design names."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
NEEDED = {
    "redis",
    "postgres",
    "minio",
    "create-bucket",
    "migrate",
    "api",
    "worker-gpu",
    "worker-cpu",
    "flower",
    "sweeper",
}


def compose(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed (apt-get install docker-compose; .ci/run does)")
    return subprocess.run(["docker-compose", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_compose_file_is_valid_and_complete() -> None:
    checked = compose("config", "-q")
    assert checked.returncode == 0, checked.stderr
    services = set(compose("config", "--services").stdout.split())
    assert services >= NEEDED, NEEDED - services
    resolved = compose("config").stdout
    assert "driver: nvidia" in resolved  # the GPU worker reserves a GPU
    assert resolved.count("healthcheck:") >= 5
    # Flower is not open to everyone, /metrics included, and its password is not on a command line
    assert "workers.flower" in resolved and "FLOWER_BASIC_AUTH:" in resolved and "basic-auth" not in resolved
    assert "KARYO_METRICS_TOKEN:" in resolved  # the API's /metrics wants a bearer token
