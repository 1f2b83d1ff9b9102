"""The development stack's SeaweedFS ports: below the kernel's ephemeral range (where an
outgoing connection may hold a port and SeaweedFS then exits), apart between the stacks the
tests run side by side, and a child that exits says why."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from service.devstack.stack import _wait_port, seaweedfs_ports
from tests.helpers import offset_port

pytestmark = pytest.mark.unit

EPHEMERAL_START = 32768  # Linux's default ip_local_port_range starts here


def test_every_seaweedfs_port_is_below_the_ephemeral_range_and_distinct() -> None:
    for s3_port in (18333, offset_port(18333), offset_port(18383), offset_port(18483), 22759):
        ports = seaweedfs_ports(s3_port)
        assert ports["s3.port"] == s3_port
        assert len(set(ports.values())) == len(ports) == 10
        assert max(ports.values()) < EPHEMERAL_START, (s3_port, ports)


def test_the_stacks_run_side_by_side_share_no_port() -> None:
    # the session's stack, the stack command's test and the fault tests' stack run at once
    stacks = [set(seaweedfs_ports(offset_port(port)).values()) for port in (18333, 18383, 18483)]
    for index, ports in enumerate(stacks):
        for other in stacks[index + 1 :]:
            assert not ports & other


def test_a_child_that_exits_is_reported_with_the_end_of_its_log(tmp_path: Path) -> None:
    log = tmp_path / "s3.log"
    with log.open("wb") as out:
        child = subprocess.Popen(
            ["sh", "-c", "echo starting; echo 'listen tcp 127.0.0.1:18341: bind: address already in use'; exit 1"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        child.wait()
    with pytest.raises(RuntimeError, match=r"SeaweedFS S3 exited with code 1: .*address already in use"):
        _wait_port(1, 5, "SeaweedFS S3", child, log)
