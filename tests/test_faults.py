"""The fault matrix: a stack with no sweeper, a PostgreSQL cluster of its own (started here, in
a temporary folder, never the machine's server) and a Redis that keeps its data (append-only
file, as docker compose's). Cases are in work when PostgreSQL stops for 15 s, Redis for 10 s,
object storage for 30 s, or a worker process is killed: every case ends `done`, with one
result set and one recorded assembly per image, and none was re-enqueued (there is no sweeper
to do it). A failure while PostgreSQL is down is recorded once it is back. A message whose
worker process dies under it every time fails its case after KARYO_MAX_REDELIVERIES deliveries
more.

Each outage's recovery (from the dependency back to every case done) is written to
out/test-artifacts/faults.json; docs/service.md quotes it.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session

from db.models import Case, CaseImage, TaskRun
from infra.settings import Settings
from infra.storage import ObjectStore
from service.devstack.stack import Stack, StackConfig
from tests.helpers import ARTIFACTS, assert_one_result_set, client, offset_port, submit, wait_done, wait_status

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[1]

MAX_REDELIVERIES = 2
RECOVERY_LIMIT_S = 300  # every case done this long after the dependency is back
MEASURED: dict[str, dict] = {}
# every outage gets the same two MCIs (their own cases), so that its time compares with the
# undisturbed run's
SAME = ("1", "2")


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (initdb in a temporary folder; run as the
    `postgres` user when the tests run as root, which PostgreSQL refuses), so that stopping it
    touches no other database of the machine."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.folder = Path(tempfile.mkdtemp(prefix="karyoflow-pg-"))
        self.data = self.folder / "data"
        self.as_owner: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self.as_owner = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str) -> None:
        subprocess.run([*self.as_owner, *argv], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        initdb = shutil.which("initdb")
        if initdb is None:
            pytest.fail("initdb not found (apt-get install postgresql)")
        self._run(initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-o", options, "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(offset_port(5441))
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory, postgres: PrivatePostgres) -> Iterator[Stack]:
    config = StackConfig(
        state_dir=tmp_path_factory.mktemp("fault-stack"),
        redis_port=offset_port(6393),
        s3_port=offset_port(18483),
        api_port=offset_port(8721),
        flower_port=offset_port(5577),
        postgres_url=postgres.url,
        database="karyoflow_faults",
        sweep_interval_s=None,  # no sweeper: what recovers here recovers on its own
        redis_append_only=True,
        extra_env={"KARYO_MAX_REDELIVERIES": str(MAX_REDELIVERIES)},
    )
    stack = Stack(config)
    try:
        stack.up()  # without a sweeper: sweep_interval_s is None
        assert "sweeper" not in stack.processes
        yield stack
    finally:
        stack.down()
        if MEASURED:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            (ARTIFACTS / "faults.json").write_text(json.dumps(MEASURED, indent=1) + "\n")


@pytest.fixture(scope="module")
def key(fault_stack: Stack) -> str:
    return fault_stack.create_clinic("Clinic Faults")


@pytest.fixture(scope="module")
def db(fault_stack: Stack) -> Iterator[Engine]:
    """The test's engine: a session of its own per check, each with a connection pinged first
    (a connection from before a PostgreSQL restart is gone)."""
    engine = create_engine(fault_stack.env["KARYO_DATABASE_URL"], pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def store(fault_stack: Stack) -> ObjectStore:
    env = fault_stack.env
    return ObjectStore(Settings(s3_endpoint=env["KARYO_S3_ENDPOINT"], s3_access_key=env["KARYO_S3_ACCESS_KEY"],
                                s3_secret_key=env["KARYO_S3_SECRET_KEY"]))  # fmt: skip


def mcis(labelled_dir: Path, *names: str) -> list[list[Path]]:
    return [[labelled_dir / "mci" / f"original_{name}.json"] for name in names]


def taken_by_the_worker(stack: Stack, queue: str, timeout: float = 60) -> None:
    """Until no message waits in `queue` and none is in transit to the worker: the worker holds
    them all (each recorded in Redis as unacknowledged, a count that then stops growing) and
    works on them. Stopping Redis while a worker is still taking messages can lose the one in
    transit (kombu's Redis transport pops a message before it records it as unacknowledged):
    that case is the sweeper's, not what this test is after."""
    client = redis.Redis.from_url(stack.env["KARYO_REDIS_URL"])
    try:
        deadline = time.monotonic() + timeout
        held, quiet_since = -1, time.monotonic()
        while client.llen(queue) or time.monotonic() - quiet_since < 1.0:
            assert time.monotonic() < deadline, f"messages still waiting in {queue}"
            now_held = client.hlen("unacked")
            if now_held > held or client.llen(queue):
                quiet_since = time.monotonic()
            held = now_held
            time.sleep(0.02)
    finally:
        client.close()


def outage(
    name: str,
    stack: Stack,
    key: str,
    db: Engine,
    store: ObjectStore,
    cases: list[list[Path]],
    stop: Callable[[], None],
    start: Callable[[], None],
    down_s: float,
    during: str = "segmenting",
    resume_before_stop: bool = False,
) -> None:
    """Submit the cases; stop the dependency for `down_s` seconds once the first is in stage
    `during`; then every case done, one result set and one assembly per image, none re-enqueued.

    `during="classifying"`: the classify worker is held (SIGSTOP) until the first case's
    chord is enqueued, then let go as the dependency stops (just before it, with
    `resume_before_stop`), so that its classifications run or finish while the dependency is
    down."""
    classify = stack.processes["classify"].pid
    held = during == "classifying"
    if held:
        os.kill(classify, signal.SIGSTOP)
    try:
        submitted = time.monotonic()
        case_ids = [submit(stack, key, paths, reference=f"{name}-{n}") for n, paths in enumerate(cases)]
        wait_status(stack, key, case_ids[0], during, timeout=240)
        with client(stack, key) as api:
            hit = [api.case(case_id)["status"] for case_id in case_ids]
        if held and resume_before_stop:
            os.kill(classify, signal.SIGCONT)
            taken_by_the_worker(stack, "classify")
        stop()
    finally:
        os.kill(classify, signal.SIGCONT)
    stopped = time.monotonic()
    time.sleep(down_s)
    start()
    back = time.monotonic()
    done = wait_done(stack, key, case_ids, timeout=RECOVERY_LIMIT_S)
    recovered = time.monotonic()
    MEASURED[name] = {
        "cases": len(case_ids),
        "statuses_when_stopped": hit,
        "down_s": round(back - stopped, 1),
        "back_to_all_done_s": round(recovered - back, 1),  # includes the cases' own work
        "submitted_to_all_done_s": round(recovered - submitted, 1),
    }
    if "none" in MEASURED and MEASURED["none"]["cases"] == len(case_ids) and name != "none":
        # what the outage cost: the cases' time over the undisturbed run's
        MEASURED[name]["added_s"] = round(recovered - submitted - MEASURED["none"]["submitted_to_all_done_s"], 1)
    with Session(db) as session:
        for case in done.values():
            assert_one_result_set(session, store, case)
        for case_id in case_ids:
            assert session.get(Case, case_id).enqueue_count == 0  # nothing swept
            images = session.scalar(select(func.count()).select_from(CaseImage).where(CaseImage.case_id == case_id))
            assembled = session.scalar(select(func.count()).select_from(TaskRun).where(
                TaskRun.case_id == case_id, TaskRun.stage == "assemble"))  # fmt: skip
            assert assembled == images, (case_id, assembled, images)


def test_no_outage(fault_stack, key, db, store, labelled_dir: Path) -> None:
    """The outages' MCIs, undisturbed: the time an outage adds is measured against this."""
    outage("none", fault_stack, key, db, store, mcis(labelled_dir, *SAME), lambda: None, lambda: None, 0)


def test_postgresql_stopped_15_s(fault_stack, key, db, store, postgres: PrivatePostgres, labelled_dir: Path) -> None:
    """Stopped while the first case's classifications run: each fails to record its run and is
    retried alone, and the chord waits for its retried members."""
    outage("postgresql", fault_stack, key, db, store, mcis(labelled_dir, *SAME),
           postgres.stop, postgres.start, 15, during="classifying")  # fmt: skip


def test_a_failure_while_postgresql_is_down_is_recorded_once_it_is_back(
    fault_stack, key, db, postgres: PrivatePostgres, labelled_dir: Path
) -> None:
    """A task that fails for good while PostgreSQL is down cannot mark its case failed: a
    `record_failure` task does, once PostgreSQL is back. The case is uploaded while Redis is
    down, so no worker takes it; the failure handler runs in a process of its own with the
    stack's settings, as a worker's would."""
    fault_stack.stop_redis()
    try:
        case_id = submit(fault_stack, key, mcis(labelled_dir, "3")[0], reference="failure")
    finally:
        fault_stack.start_redis()
    with Session(db) as session:
        image_id = session.scalar(select(CaseImage.id).where(CaseImage.case_id == case_id))
    reason = "segment_image: RuntimeError: failed for good"
    postgres.stop()
    try:
        handler = f"from workers.tasks import fail_or_defer; fail_or_defer({image_id!r}, {reason!r})"
        out = subprocess.run([sys.executable, "-c", handler], env=fault_stack.env, cwd=REPO, capture_output=True,
                             text=True, timeout=300)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "deferred to record_failure" in out.stderr, out.stderr
        time.sleep(3)  # record_failure is tried and retried meanwhile
    finally:
        postgres.start()
    wait_status(fault_stack, key, case_id, "failed", timeout=120)
    with client(fault_stack, key) as api:
        assert api.case(case_id)["error"] == reason


def test_redis_stopped_10_s(fault_stack, key, db, store, labelled_dir: Path) -> None:
    """Stopped while the first case's classifications run: their results, the chord's count of
    them and the assembly's message wait for Redis; the queued cases are kept by Redis's
    append-only file."""
    cases = mcis(labelled_dir, *SAME)
    outage("redis", fault_stack, key, db, store, cases, fault_stack.stop_redis, fault_stack.start_redis, 10,
           during="classifying", resume_before_stop=True)  # fmt: skip


def test_object_storage_stopped_30_s(fault_stack, key, db, store, labelled_dir: Path) -> None:
    """Stopped while the first case segments: storing its ICIs, and reading the originals of
    the cases after it, are retried."""
    outage("object storage", fault_stack, key, db, store, mcis(labelled_dir, *SAME),
           lambda: fault_stack.stop("s3"), fault_stack.start_storage, 30)  # fmt: skip


def pool_child(stack: Stack, worker: str) -> int:
    """The process id of the worker's (single) prefork child, once it runs."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-P", str(stack.processes[worker].pid)], capture_output=True, text=True)
        pids = [int(p) for p in found.stdout.split()]
        if pids:
            return pids[0]
        time.sleep(0.2)
    raise AssertionError(f"{worker} has no pool process")


def test_a_worker_process_killed_mid_task(fault_stack, key, db, store, labelled_dir: Path) -> None:
    """The segment worker's process is killed (SIGKILL, as the kernel kills for memory) while
    it segments: its message is delivered again to the process that replaces it."""
    outage("worker killed", fault_stack, key, db, store, mcis(labelled_dir, "7"),
           lambda: os.kill(pool_child(fault_stack, "gpu0"), signal.SIGKILL), lambda: None, 0)  # fmt: skip


def test_a_poison_message_fails_its_case_after_its_redeliveries(fault_stack, key, labelled_dir: Path) -> None:
    """The segment worker's process dies under the same message at every delivery: after
    1 + MAX_REDELIVERIES deliveries, the next one fails the case with the reason instead of
    running (without the cap it would be delivered forever)."""
    deliveries = redis.Redis.from_url(fault_stack.env["KARYO_REDIS_URL"])
    before = set(deliveries.keys("karyoflow:deliveries:*"))
    case_id = submit(fault_stack, key, mcis(labelled_dir, "106")[0], reference="poison")
    for delivery in range(1, MAX_REDELIVERIES + 2):
        deadline = time.monotonic() + 240
        while True:  # this delivery has started: its count is in Redis
            counters = set(deliveries.keys("karyoflow:deliveries:*")) - before
            if counters and int(deliveries.get(next(iter(counters))) or 0) >= delivery:
                break
            assert time.monotonic() < deadline, f"delivery {delivery} never started"
            time.sleep(0.1)
        os.kill(pool_child(fault_stack, "gpu0"), signal.SIGKILL)
    wait_status(fault_stack, key, case_id, "failed", timeout=240)
    with client(fault_stack, key) as api:
        case = api.case(case_id)
    assert case["error"].startswith(f"segment_image: PoisonMessage: delivered {MAX_REDELIVERIES + 2} times"), case
    deliveries.close()
