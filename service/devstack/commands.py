"""`karyo stack`: start, inspect and stop the development stack.

karyo stack up [--sqlite] [--dir DIR]    start everything; print the API URL and a dev API key
karyo stack status [--dir DIR]           what runs, queue depths, cases by status
karyo stack down [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

import httpx

from karyoflow.cli.common import UsageError
from service.devstack.stack import Stack, StackConfig, alive_processes, read_state, state_dir, write_state_file


def cmd_stack_up(args: argparse.Namespace) -> int:
    directory = args.dir or state_dir()
    if alive_processes(read_state(directory)):
        raise UsageError(f"a stack already runs from {directory}: 'karyo stack down' first")
    config = StackConfig(
        state_dir=directory,
        postgres_url=None if args.sqlite else args.postgres,
        api_port=args.api_port,
        redis_port=args.redis_port,
        s3_port=args.s3_port,
        flower_port=args.flower_port,
    )
    stack = Stack(config)
    try:
        stack.up()
    except (FileNotFoundError, RuntimeError, TimeoutError) as error:  # a missing binary, a busy port
        stack.down()
        raise UsageError(f"stack not started: {error} (logs: {stack.logs})") from error
    except BaseException:
        stack.down()
        raise
    key = stack.create_clinic("development")
    state = read_state(directory)
    state["dev_api_key"] = key
    write_state_file(directory, state)
    print(f"API      {stack.api_url}  (docs: {stack.api_url}/docs)")
    print(f"API key  {key}  (clinic 'development')")
    print(f"Flower   {stack.flower_url}  (user {config.flower_user}, password {config.flower_password})")
    print(f"dashboard {stack.api_url}/dashboard   metrics {stack.api_url}/metrics (bearer token:")
    print(f"         KARYO_METRICS_TOKEN in {directory / 'state.json'}, readable by you only)")
    print(f"logs     {stack.logs}")
    return 0


def cmd_stack_down(args: argparse.Namespace) -> int:
    directory = args.dir or state_dir()
    state = read_state(directory)
    for pid in state.get("pids", {}).values():
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.time() + 20
    while time.time() < deadline and alive_processes(state):
        time.sleep(0.3)
    for name in alive_processes(state):
        os.killpg(state["pids"][name], signal.SIGKILL)
    (directory / "state.json").unlink(missing_ok=True)
    print("stack stopped")
    return 0


def cmd_stack_status(args: argparse.Namespace) -> int:
    from api.monitoring import QUEUES, queue_depths, workers_online
    from api.readiness import OK, check_dependencies
    from infra.settings import Settings

    state = read_state(args.dir or state_dir())
    if not state:
        print("no stack (karyo stack up)")
        return 1
    alive = alive_processes(state)
    for name in state.get("pids", {}):
        print(f"{name:<8} {'running' if name in alive else 'STOPPED'}")
    env = state.get("env", {})
    depths = queue_depths(env["KARYO_REDIS_URL"])
    if None in depths.values():
        print("queues   unavailable (Redis does not answer)")
    else:
        print("queues   " + "  ".join(f"{queue} {depths[queue]}" for queue in QUEUES))
    print("workers  " + (", ".join(workers_online(env["KARYO_REDIS_URL"])) or "none online"))
    try:
        health = httpx.get(f"{state['api_url']}/health", timeout=5).status_code
        ready = httpx.get(f"{state['api_url']}/health/ready", timeout=15).status_code
        print(f"api      {state['api_url']} /health {health}  /health/ready {ready}")
    except httpx.HTTPError as error:
        print(f"api      unavailable ({error})")
    # the API keeps the reasons to itself (its readiness needs no key); this command has the
    # stack's settings, so it runs the same checks and prints them
    names = ("DATABASE_URL", "REDIS_URL", "S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY")
    settings = Settings(**{name.lower(): env[f"KARYO_{name}"] for name in names if f"KARYO_{name}" in env})
    for name, reason in check_dependencies(settings).items():
        if reason != OK:
            print(f"  {name} not ready: {reason}")
    try:
        _print_case_figures(env["KARYO_DATABASE_URL"])
    except Exception as error:  # a database that is down is a status to show, not a crash
        print(f"cases    unavailable ({error})")
    return 0 if len(alive) == len(state.get("pids", {})) else 1


def _print_case_figures(database_url: str) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from api.monitoring import case_figures

    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            figures = case_figures(session, clinic_id=None)
    finally:
        engine.dispose()
    by_status = figures["cases_by_status"]
    print("cases    " + "  ".join(f"{status} {count}" for status, count in by_status.items()))
    print(
        f"done     {figures['cases_done_last_hour']} in the last hour, {figures['cases_done_last_day']} in 24 h; "
        f"{figures['icis_last_day']} ICIs in 24 h; failure rate {100 * figures['failure_rate_last_day']:.1f}%"
    )
    for stage, latency in figures["stage_latency"].items():
        p50, p95 = latency["p50_ms"], latency["p95_ms"]
        if latency["count"]:
            print(f"{stage:<9}p50 {p50:.0f} ms  p95 {p95:.0f} ms  ({latency['count']} runs in 24 h)")
    for failure in figures["latest_failures"][:3]:
        print(f"failed   {failure['case']} {failure['at']}: {failure['reason'][:100]}")


def add_commands(commands: argparse._SubParsersAction) -> None:
    stack = commands.add_parser("stack", help="a local stack without Docker").add_subparsers(dest="what", required=True)
    up = stack.add_parser("up", help="start Redis, SeaweedFS, the database, the API, workers and the sweeper")
    state_folder = {"type": Path, "default": None, "help": "state folder (default: $KARYO_STACK_DIR)"}
    up.add_argument("--dir", **state_folder)
    up.add_argument("--sqlite", action="store_true", help="SQLite instead of the machine's PostgreSQL")
    up.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    up.add_argument("--api-port", type=int, default=8700)
    up.add_argument("--redis-port", type=int, default=6391)
    up.add_argument(
        "--s3-port",
        type=int,
        default=18333,
        help="SeaweedFS S3; its other ports are the next eight, and admin gRPC 10000 above the last",
    )
    up.add_argument("--flower-port", type=int, default=5566)
    up.set_defaults(func=cmd_stack_up)
    down = stack.add_parser("down", help="stop the stack")
    down.add_argument("--dir", **state_folder)
    down.set_defaults(func=cmd_stack_down)
    status = stack.add_parser("status", help="processes, queue depths, cases by status")
    status.add_argument("--dir", **state_folder)
    status.set_defaults(func=cmd_stack_status)
