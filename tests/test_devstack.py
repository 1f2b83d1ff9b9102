"""The development stack keeps its secrets (the S3 key, Flower's password, the metrics token,
the dev API key) from other local users: in no process's command line (the process table is
world-readable), in a state file only its owner can read, and no SeaweedFS port that serves
objects without S3 credentials."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from infra.storage import ObjectStore
from service.devstack.stack import Stack, seaweedfs_ports

pytestmark = pytest.mark.system


def process_group_members(leaders: set[int]) -> dict[int, list[str]]:
    """pid -> argv of every process in the given process groups (each stack service runs in
    a session of its own, so its children, such as prefork workers, are found too)."""
    members = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) in leaders:  # field 5 of stat: the process group
                members[int(entry.name)] = (entry / "cmdline").read_bytes().decode().split("\0")
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue  # gone meanwhile
    return members


def test_no_secret_in_the_process_table_and_a_private_state_file(stack: Stack) -> None:
    c = stack.config
    secrets = {"S3 secret": c.s3_secret_key, "Flower password": c.flower_password, "metrics token": c.metrics_token}
    members = process_group_members({process.pid for process in stack.processes.values()})
    names = " ".join(" ".join(argv) for argv in members.values())
    assert all(part in names for part in ("redis-server", "weed", "uvicorn", "celery", "workers.flower", "sweeper"))
    assert len(members) >= 9  # the parents, and the workers' prefork children
    for pid, argv in members.items():
        shown = [what for what, secret in secrets.items() if any(secret in arg for arg in argv)]
        assert not shown, (pid, shown, argv[:3])
    # they come through the environment instead (readable by the owner only)
    flower = stack.processes["flower"].pid
    environment = Path(f"/proc/{flower}/environ").read_bytes().split(b"\0")
    assert f"FLOWER_BASIC_AUTH={c.flower_user}:{c.flower_password}".encode() in environment
    state = c.state_dir / "state.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert c.s3_secret_key in state.read_text() and c.metrics_token in state.read_text()
    assert stat.S_IMODE(c.state_dir.stat().st_mode) & 0o077 == 0  # the stack's data: the owner's only


def test_stored_objects_are_served_only_with_s3_credentials(stack: Stack, store: ObjectStore) -> None:
    key = "probe/filer-check.txt"
    content = os.urandom(16).hex().encode()
    store.ensure_bucket()
    store.put(key, content, "text/plain")
    try:
        assert store.get(key) == content  # with the credentials
        ports = seaweedfs_ports(stack.config.s3_port)
        without = {
            "S3 without a signature": f"http://127.0.0.1:{stack.config.s3_port}/{store.bucket}/{key}",
            "the filer": f"http://127.0.0.1:{ports['filer.port']}/buckets/{store.bucket}/{key}",
            "the filer's listing": f"http://127.0.0.1:{ports['filer.port']}/buckets/{store.bucket}/probe/",
            "the admin UI": f"http://127.0.0.1:{ports['admin.port']}/files?path=/buckets/{store.bucket}/probe",
        }
        for what, url in without.items():
            try:
                response = httpx.get(url, timeout=10)
            except httpx.TransportError:
                continue  # nothing listens: nothing served
            assert response.status_code in (401, 403, 404), (what, response.status_code)
            assert content not in response.content, what
            if "listing" in what:
                assert b"filer-check" not in response.content, what
    finally:
        store.client.remove_object(store.bucket, key)
