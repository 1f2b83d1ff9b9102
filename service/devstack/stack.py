"""A local Karyoflow stack without Docker, for development and the tests.

Starts what the service needs as child processes: a Redis (its own redis-server, so it can be
stopped and restarted), SeaweedFS (`weed mini`, S3 with credentials), the database (a PostgreSQL
database created on the machine's server, or SQLite), the migrations, the API under uvicorn, three
Celery workers (segment, classify as a thread pool batching its ICIs, assemble), the sweeper
and Flower. Every process gets the same KARYO_* environment. `Stack.up()` returns once every
service answers.

Secrets (the S3 key, Flower's password, the metrics token; random per stack) travel in the
environment, never on a command line (which every local user can read in the process table),
and the state file that keeps them is readable by its owner only. SeaweedFS answers only S3
with credentials: its filer's HTTP port (which would serve every object to anyone) is off.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
STACK_DIR_ENV = "KARYO_STACK_DIR"


def state_dir() -> Path:
    """Where `karyo stack up` keeps the running stack's state: $KARYO_STACK_DIR, default
    ~/.karyoflow/stack."""
    return Path(os.environ.get(STACK_DIR_ENV, Path.home() / ".karyoflow" / "stack"))


def read_state(directory: Path | None = None) -> dict:
    """The state file of the stack (API URL, the dev API key, process ids, environment); {} when
    no stack was started there."""
    path = (directory or state_dir()) / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_state_file(directory: Path, state: dict) -> None:
    """Writes the state file readable by its owner only (it holds the dev API key and the
    stack's secrets), atomically: a reader sees the old file or the new one."""
    path = directory / "state.json"
    partial = path.with_suffix(".json.partial")
    partial.unlink(missing_ok=True)  # a left-over one would keep its own mode
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        json.dump(state, out, indent=1)
    os.replace(partial, path)


def alive_processes(state: dict) -> list[str]:
    """Names of the state's processes that still run."""
    alive = []
    for name, pid in state.get("pids", {}).items():
        try:
            os.kill(pid, 0)
            alive.append(name)
        except ProcessLookupError:
            continue
    return alive


# Seconds the API, the workers, Flower and S3 get to start: importing torch and loading the models takes a
# few seconds of CPU, but minutes of wall time on a small host whose cores are busy with other work.
STARTUP_TIMEOUT_S = 240


def _wait_port(
    port: int, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise _exit_error(what, process, log)
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not answer on port {port} within {timeout:.0f} s")


def _port_free(port: int, what: str) -> None:
    """Refuse to start on a port something else answers on (we would talk to a stranger)."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise RuntimeError(f"port {port} for {what} is already in use")


def _exit_error(what: str, process: subprocess.Popen, log: Path | None, lines: int = 3) -> RuntimeError:
    """A child that exited while starting, with the end of its log: the error says why it
    stopped without anyone opening the file."""
    tail = log.read_text(errors="replace").strip().splitlines()[-lines:] if log is not None and log.is_file() else []
    said = ": " + " | ".join(line.strip() for line in tail) if tail else ""
    return RuntimeError(f"{what} exited with code {process.returncode}{said}")


def seaweedfs_ports(s3_port: int) -> dict[str, int]:
    """Every port `weed mini` listens on (flag -> port): nine in a row from its S3 port, and
    the admin server's gRPC port 10000 above its HTTP port (the embedded maintenance worker
    dials it there whatever -admin.port.grpc says). SeaweedFS's own defaults spread from 8080
    to 33646 with gRPC 10000 above each: moved together they reach the kernel's ephemeral
    range (32768-60999), where an outgoing connection may already hold the port and SeaweedFS
    exits. Keep the S3 port below 22760 so that every port stays under that range."""
    flags = ["s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
             "filer.port", "filer.port.grpc", "admin.port"]  # fmt: skip
    ports = {flag: s3_port + index for index, flag in enumerate(flags)}
    ports["admin.port.grpc"] = ports["admin.port"] + 10000
    return ports


def _binary(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found (pip install the dev extras / apt-get install it)")
    return found


@dataclass
class StackConfig:
    state_dir: Path
    redis_port: int = 6391
    s3_port: int = 18333
    api_port: int = 8700
    # a PostgreSQL server URL without database (the stack creates `database`), or "sqlite"
    postgres_url: str | None = "postgresql+psycopg://postgres@127.0.0.1:5432"
    database: str = "karyoflow_stack"
    stuck_after_s: int = 900
    lost_after_s: int = 60  # an unfinished image without a message this long is enqueued again
    sweep_interval_s: float | None = 15.0  # None: no sweeper (to see what recovers without it)
    # Redis keeps its data over a restart in an append-only file (docker compose's Redis does);
    # off: a restart loses every queued message, and the sweeper enqueues those cases again
    redis_append_only: bool = False
    worker_concurrency: int = 1  # processes of the segment and of the assemble worker
    # classify tasks one worker process holds at once, each a thread; their ICIs share forward
    # passes (workers.batching)
    classify_threads: int = 64
    flower_port: int = 5566
    flower_user: str = "admin"
    flower_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    s3_secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    metrics_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        if self.postgres_url is None:
            return f"sqlite:///{self.state_dir / 'karyoflow.db'}"
        return f"{self.postgres_url}/{self.database}"


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.processes: dict[str, subprocess.Popen] = {}
        config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the stack's data and secrets
        self.logs = config.state_dir / "logs"
        self.logs.mkdir(exist_ok=True)

    # -- environment shared by every process --
    @property
    def env(self) -> dict[str, str]:
        c = self.config
        env = dict(os.environ)
        env.update(
            KARYO_DATABASE_URL=c.database_url,
            KARYO_REDIS_URL=f"redis://127.0.0.1:{c.redis_port}/0",
            KARYO_S3_ENDPOINT=f"127.0.0.1:{c.s3_port}",
            KARYO_S3_ACCESS_KEY="karyoflow",
            KARYO_S3_SECRET_KEY=c.s3_secret_key,
            KARYO_STUCK_AFTER_S=str(c.stuck_after_s),
            KARYO_LOST_AFTER_S=str(c.lost_after_s),
            KARYO_FLOWER_URL=self.flower_url,
            KARYO_METRICS_TOKEN=c.metrics_token,
            PYTHONPATH=str(REPO),
            OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        )
        env.update(c.extra_env)
        return env

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.config.api_port}"

    @property
    def flower_url(self) -> str:
        return f"http://127.0.0.1:{self.config.flower_port}"

    def log_path(self, name: str) -> Path:
        """Where the child process `name` writes its output."""
        return self.logs / f"{name}.log"

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.log_path(name), "ab")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen(
            argv, env=env or self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )
        self.processes[name] = process
        return process

    # -- services --
    def start_redis(self) -> None:
        c = self.config
        redis_dir = c.state_dir / "redis"
        redis_dir.mkdir(exist_ok=True)
        argv = [_binary("redis-server"), "--port", str(c.redis_port), "--bind", "127.0.0.1", "--dir", str(redis_dir)]
        # without persistence a restart loses every queued message, which is what the sweeper is for
        persistence = ["--appendonly", "yes" if c.redis_append_only else "no"]
        _port_free(c.redis_port, "redis-server")
        process = self._start("redis", [*argv, "--save", "", *persistence])
        _wait_port(c.redis_port, 60, "redis-server", process, self.log_path("redis"))

    def stop_redis(self) -> None:
        self.stop("redis")

    def start_storage(self) -> None:
        c = self.config
        data = c.state_dir / "s3"
        data.mkdir(exist_ok=True)
        ports = seaweedfs_ports(c.s3_port)
        env = {**self.env, "AWS_ACCESS_KEY_ID": "karyoflow", "AWS_SECRET_ACCESS_KEY": c.s3_secret_key}
        # -disableHttp: the filer's HTTP port would serve every object without credentials (S3
        # reaches the filer over gRPC); no admin UI, no Iceberg or Lance catalog ports
        argv = [
            _binary("weed"), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-webdav=false", "-disableHttp", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            *(f"-{flag}={port}" for flag, port in ports.items()),
        ]  # fmt: skip
        for flag, port in ports.items():
            _port_free(port, f"SeaweedFS (-{flag})")
        process = self._start("s3", argv, env)
        _wait_port(c.s3_port, STARTUP_TIMEOUT_S, "SeaweedFS S3", process, self.log_path("s3"))

    def prepare_database(self) -> None:
        c = self.config
        if c.postgres_url is not None:
            import psycopg

            admin = c.postgres_url.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
            with psycopg.connect(admin, autocommit=True) as connection:
                exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (c.database,)).fetchone()
                if not exists:
                    connection.execute(f'CREATE DATABASE "{c.database}"')
        subprocess.run([sys.executable, "-m", "db", "upgrade"], env=self.env, cwd=REPO, check=True)

    def drop_database(self) -> None:
        c = self.config
        if c.postgres_url is None:
            return
        import psycopg

        admin = c.postgres_url.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{c.database}" WITH (FORCE)')

    def start_api(self) -> None:
        argv = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
                "--port", str(self.config.api_port), "--http", "api.http_protocol:NoDelayH11Protocol"]  # fmt: skip
        _port_free(self.config.api_port, "the API")
        process = self._start("api", argv)
        deadline = time.time() + STARTUP_TIMEOUT_S
        while time.time() < deadline:
            if process.poll() is not None:
                raise _exit_error("the API", process, self.log_path("api"))
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"the API did not answer /health within {STARTUP_TIMEOUT_S} s")

    def start_worker(self, name: str, queues: str) -> subprocess.Popen:
        """A worker; one that serves only the classify queue runs a thread pool (its tasks'
        ICIs are classified in shared forward passes), the others prefork processes."""
        if queues == "classify":
            pool = ["-P", "threads", "-c", str(self.config.classify_threads)]
        else:
            pool = ["-P", "prefork", "-c", str(self.config.worker_concurrency)]
        argv = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", queues, *pool,
                "-n", f"{name}@%h", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]  # fmt: skip
        return self._start(name, argv)

    def start_sweeper(self) -> None:
        if self.config.sweep_interval_s is None:
            return
        argv = [sys.executable, "-m", "workers.sweeper", "--interval", str(self.config.sweep_interval_s)]
        self._start("sweeper", argv)

    def start_flower(self) -> None:
        c = self.config
        _port_free(c.flower_port, "Flower")
        argv = [sys.executable, "-m", "celery", "-A", "workers.flower", "flower", f"--port={c.flower_port}",
                "--address=127.0.0.1"]  # fmt: skip
        # the password in the environment, not on the command line (Flower reads FLOWER_* options)
        process = self._start("flower", argv, {**self.env, "FLOWER_BASIC_AUTH": f"{c.flower_user}:{c.flower_password}"})
        _wait_port(c.flower_port, STARTUP_TIMEOUT_S, "Flower", process, self.log_path("flower"))  # imports the tasks

    def workers_ready(self, names: list[str], timeout: float = 2 * STARTUP_TIMEOUT_S) -> None:
        """Wait until every named worker answers a ping (models loaded)."""
        from celery import Celery

        probe = Celery(broker=self.env["KARYO_REDIS_URL"], backend=self.env["KARYO_REDIS_URL"])
        deadline = time.time() + timeout
        while time.time() < deadline:
            for name in names:
                if self.processes[name].poll() is not None:
                    raise _exit_error(f"worker {name}", self.processes[name], self.log_path(name))
            replies = probe.control.ping(timeout=1.0) or []
            answered = {host.split("@")[0] for reply in replies for host in reply}
            if set(names) <= answered:
                return
            time.sleep(0.5)
        raise TimeoutError(f"workers {names} not ready within {timeout:.0f} s")

    def up(self) -> None:
        self.start_redis()
        self.start_storage()
        self.prepare_database()
        self.start_api()
        self.start_worker("gpu0", "segment")
        self.start_worker("classify", "classify")
        self.start_worker("cpu", "assemble")
        self.start_sweeper()
        self.start_flower()
        self.workers_ready(["gpu0", "classify", "cpu"])
        self.write_state()

    def create_clinic(self, name: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "db.admin", "create-clinic", name],
            env=self.env, cwd=REPO, check=True, capture_output=True, text=True,
        )  # fmt: skip
        return out.stdout.strip()

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(5)

    def down(self) -> None:
        for name in ["sweeper", "flower", "gpu0", "classify", "cpu", "api", "s3", "redis"] + list(self.processes):
            self.stop(name)

    def write_state(self) -> None:
        state = {
            "api_url": self.api_url,
            "flower_url": self.flower_url,
            "flower_user": self.config.flower_user,
            "flower_password": self.config.flower_password,
            "pids": {name: p.pid for name, p in self.processes.items()},
            "env": {k: v for k, v in self.env.items() if k.startswith("KARYO_")},
        }
        write_state_file(self.config.state_dir, state)
