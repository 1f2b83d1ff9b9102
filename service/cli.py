"""`karyo` commands of the service: a local stack and the API's clients.

    karyo stack up [--sqlite] [--dir DIR]    start everything; print the API URL and a dev API key
    karyo stack status                       what runs, queue depths, cases by status
    karyo stack down
    karyo submit FILE... [--reference R] [--wait] [--json]
    karyo cases list [--status S] [--karyotype K] [--abnormal|--normal] [--reference R]
                     [--since T] [--until T] [--limit N] [--json]
    karyo cases show ID [--json]
    karyo cases karyogram ID [--image N] --out FILE
    karyo cases delete ID                    erase a finished case (objects, then rows)
    karyo throughput FILE|DIR... [--cases N] [--json OUT]   MCIs per hour of a running deployment

The client commands find the API and the key in the stack's state file (`$KARYO_STACK_DIR`,
default ~/.karyoflow/stack), or take KARYO_API_URL / KARYO_API_KEY, or --api / --key. Every other
command is the core's (karyoflow.cli), which this module extends without the core knowing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

from karyoflow import cli as core_cli
from karyoflow.files import write_atomically
from karyoflow.inputs import InputError, find_images, load_image

SERVICE_COMMANDS = {"stack", "submit", "cases", "throughput"}


def state_dir() -> Path:
    return Path(os.environ.get("KARYO_STACK_DIR", Path.home() / ".karyoflow" / "stack"))


def read_state() -> dict:
    path = state_dir() / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _client(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    state = read_state()
    url = args.api or os.environ.get("KARYO_API_URL") or state.get("api_url")
    key = args.key or os.environ.get("KARYO_API_KEY") or state.get("dev_api_key")
    if not url or not key:
        raise core_cli.UsageError("no API URL/key: run 'karyo stack up', or set KARYO_API_URL and KARYO_API_KEY")
    return url.rstrip("/"), {"X-API-Key": key}


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise core_cli.UsageError(f"HTTP {response.status_code}: {detail}")
    return response


def cmd_stack_up(args: argparse.Namespace) -> int:
    from service.stack import Stack, StackConfig

    directory = args.dir or state_dir()
    if (directory / "state.json").is_file() and _alive(json.loads((directory / "state.json").read_text())):
        raise core_cli.UsageError(f"a stack already runs from {directory}: 'karyo stack down' first")
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
        raise core_cli.UsageError(f"stack not started: {error} (logs: {stack.logs})") from error
    except BaseException:
        stack.down()
        raise
    key = stack.create_clinic("development")
    state = json.loads((directory / "state.json").read_text())
    state["dev_api_key"] = key
    (directory / "state.json").write_text(json.dumps(state, indent=1))
    print(f"API      {stack.api_url}  (docs: {stack.api_url}/docs)")
    print(f"API key  {key}  (clinic 'development')")
    print(f"Flower   {stack.flower_url}  (user {config.flower_user}, password {config.flower_password})")
    print(f"dashboard {stack.api_url}/dashboard   metrics {stack.api_url}/metrics")
    print(f"logs     {stack.logs}")
    return 0


def _alive(state: dict) -> dict[str, bool]:
    alive = {}
    for name, pid in state.get("pids", {}).items():
        try:
            os.kill(pid, 0)
            alive[name] = True
        except ProcessLookupError:
            alive[name] = False
    return {name: up for name, up in alive.items() if up}


def cmd_stack_down(args: argparse.Namespace) -> int:
    state = read_state()
    for pid in state.get("pids", {}).values():
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.time() + 20
    while time.time() < deadline and _alive(state):
        time.sleep(0.3)
    for name in _alive(state):
        os.killpg(state["pids"][name], signal.SIGKILL)
    (state_dir() / "state.json").unlink(missing_ok=True)
    print("stack stopped")
    return 0


def cmd_stack_status(args: argparse.Namespace) -> int:
    state = read_state()
    if not state:
        print("no stack (karyo stack up)")
        return 1
    alive = _alive(state)
    for name in state.get("pids", {}):
        print(f"{name:<8} {'running' if name in alive else 'STOPPED'}")
    env = state.get("env", {})
    try:
        import redis

        broker = redis.Redis.from_url(env["KARYO_REDIS_URL"], socket_timeout=2)
        depths = {queue: broker.llen(queue) for queue in ("segment", "classify", "assemble")}
        print("queues   " + "  ".join(f"{q} {n}" for q, n in depths.items()))
    except Exception as error:  # Redis down is a status to show, not a crash
        print(f"queues   unavailable ({error})")
    try:
        from celery import Celery

        probe = Celery(broker=env["KARYO_REDIS_URL"], backend=env["KARYO_REDIS_URL"])
        replies = probe.control.ping(timeout=1.0) or []
        print("workers  " + (", ".join(sorted(name for reply in replies for name in reply)) or "none online"))
    except Exception as error:
        print(f"workers  unavailable ({error})")
    try:
        health = httpx.get(f"{state['api_url']}/health", timeout=5).status_code
        ready = httpx.get(f"{state['api_url']}/health/ready", timeout=15).status_code
        print(f"api      {state['api_url']} /health {health}  /health/ready {ready}")
    except httpx.HTTPError as error:
        print(f"api      unavailable ({error})")
    # the API keeps the reasons to itself (its readiness needs no key); this command has the
    # stack's settings, so it runs the same checks and prints them
    from service.readiness import OK, check_dependencies
    from service.settings import Settings

    names = ("DATABASE_URL", "REDIS_URL", "S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY")
    settings = Settings(**{name.lower(): env[f"KARYO_{name}"] for name in names if f"KARYO_{name}" in env})
    for name, reason in check_dependencies(settings).items():
        if reason != OK:
            print(f"  {name} not ready: {reason}")
    try:
        from sqlalchemy import create_engine
        from sqlalchemy.orm import Session

        from service.monitoring import case_figures

        engine = create_engine(env["KARYO_DATABASE_URL"])
        with Session(engine) as session:
            figures = case_figures(session, clinic_id=None)
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
    except Exception as error:
        print(f"cases    unavailable ({error})")
    return 0 if len(alive) == len(state.get("pids", {})) else 1


def _print_case(case: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(case, indent=1))
        return
    print(f"{case['id']}  {case['status']:<11} {case.get('karyotype') or '-':<20} {case.get('reference') or ''}")
    if case.get("error"):
        print(f"  error: {case['error']}")
    for image in case.get("images", []):
        print(
            f"  [{image['position']}] {image['filename']:<24} {image['status']:<11} "
            f"{image.get('karyotype') or '-':<20} {image.get('chromosome_count') or '-'} chromosomes"
        )


def cmd_submit(args: argparse.Namespace) -> int:
    url, headers = _client(args)
    for path in args.files:
        if not path.is_file():
            raise core_cli.UsageError(f"{path}: no such file")
    files = [("files", (path.name, path.read_bytes())) for path in args.files]
    created = _check(
        httpx.post(f"{url}/v1/cases", files=files, data={"reference": args.reference}, headers=headers, timeout=120)
    ).json()
    case_id = created["id"]
    case = created
    if args.wait:
        deadline = time.time() + args.timeout
        while time.time() < deadline:
            case = _check(httpx.get(f"{url}/v1/cases/{case_id}", headers=headers, timeout=30)).json()
            if case["status"] in ("done", "failed"):
                break
            time.sleep(1)
        else:
            raise core_cli.UsageError(f"case {case_id} not finished after {args.timeout} s")
    if args.json:
        print(json.dumps(case, indent=1))
    elif args.wait:
        _print_case(case, False)
    else:
        print(case_id)
    return 0 if case["status"] != "failed" else 1


def cmd_cases_list(args: argparse.Namespace) -> int:
    url, headers = _client(args)
    params = {
        k: v
        for k, v in {
            "status": args.status,
            "karyotype": args.karyotype,
            "reference": args.reference,
            "since": args.since,
            "until": args.until,
            "limit": args.limit,
            "abnormal": args.abnormal,
        }.items()
        if v is not None
    }
    page = _check(httpx.get(f"{url}/v1/cases", params=params, headers=headers, timeout=30)).json()
    if args.json:
        print(json.dumps(page, indent=1))
        return 0
    for case in page["items"]:
        _print_case(case, False)
    if page.get("next_cursor"):
        print(f"(more: --cursor {page['next_cursor']})")
    return 0


def cmd_cases_show(args: argparse.Namespace) -> int:
    url, headers = _client(args)
    _print_case(_check(httpx.get(f"{url}/v1/cases/{args.id}", headers=headers, timeout=30)).json(), args.json)
    return 0


def cmd_cases_karyogram(args: argparse.Namespace) -> int:
    url, headers = _client(args)
    response = _check(
        httpx.get(f"{url}/v1/cases/{args.id}/karyogram", params={"image": args.image}, headers=headers, timeout=60)
    )
    write_atomically(args.out, response.content)
    print(f"wrote {args.out}")
    return 0


STAGES = ("segment", "straighten", "classify", "assemble")


def _png_bytes(path: Path) -> tuple[str, bytes]:
    """An upload: image files as they are, a labelme JSON's embedded MCI as PNG."""
    if path.suffix.lower() != ".json":
        return path.name, path.read_bytes()
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(load_image(path)).save(buffer, format="PNG")
    return path.stem + ".png", buffer.getvalue()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)  # nearest rank: a latency that really occurred
    return round(ordered[min(int(round(q / 100 * (len(ordered) - 1))), len(ordered) - 1)], 2)


def throughput_summary(cases: list[dict], reports: list[dict], wall_s: float, submit_s: float) -> dict:
    """Figures of one throughput run: `cases` as GET /v1/cases/{id} returns them when finished,
    `reports` the JSON reports of their images. Latency is the server's (created -> finished);
    the stage times are the workers' own compute per image (classify: summed over its ICI
    tasks), so `latency - compute` is what queues and hand-offs cost."""
    done = [c for c in cases if c["status"] == "done"]
    latencies = [
        (datetime.fromisoformat(c["finished_at"]) - datetime.fromisoformat(c["created_at"])).total_seconds()
        for c in done
    ]
    stages = {
        stage: round(sum(r["timings_ms"].get(stage, 0.0) for r in reports) / len(reports), 1) if reports else None
        for stage in STAGES
    }
    images = sum(len(c.get("images", [])) for c in done)
    compute_s = sum(v for v in stages.values() if v is not None) / 1000 if reports else None
    return {
        "cases": len(cases),
        "done": len(done),
        "failed": sum(c["status"] == "failed" for c in cases),
        "images": images,
        "wall_s": round(wall_s, 2),
        "submit_s": round(submit_s, 2),
        "images_per_hour": round(images / wall_s * 3600, 1) if wall_s > 0 else None,
        "latency_s": {
            "p50": _percentile(latencies, 50),
            "p95": _percentile(latencies, 95),
            "max": round(max(latencies), 2) if latencies else None,
        },
        "compute_ms_per_image": stages,
        "compute_s_per_image": round(compute_s, 3) if compute_s is not None else None,
    }


def cmd_throughput(args: argparse.Namespace) -> int:
    """Submit `--cases` one-image cases back to back, wait for all, report MCIs per hour and
    latency. A real measurement of a running deployment (the local stack or docker compose), not
    a test. The cases are real cases of the key's clinic (reference `throughput-<n>`); `--delete`
    erases them afterwards."""
    url, headers = _client(args)
    if args.cases < 1:
        raise core_cli.UsageError("--cases must be at least 1")
    uploads = [_png_bytes(path) for path in find_images(args.files)]
    started = time.monotonic()
    case_ids = []
    for n in range(args.cases):
        name, content = uploads[n % len(uploads)]
        created = _check(
            httpx.post(
                f"{url}/v1/cases",
                files=[("files", (name, content))],
                data={"reference": f"{args.reference}-{n + 1}"},
                headers=headers,
                timeout=120,
            )
        ).json()
        case_ids.append(created["id"])
    submit_s = time.monotonic() - started
    deadline = started + args.timeout
    finished: dict[str, dict] = {}
    with httpx.Client(headers=headers, timeout=30) as http:
        while True:
            for case_id in case_ids:
                if case_id not in finished:
                    case = _check(http.get(f"{url}/v1/cases/{case_id}")).json()
                    if case["status"] in ("done", "failed"):
                        finished[case_id] = case
            if len(finished) == len(case_ids):
                break
            if time.monotonic() > deadline:
                missing = len(case_ids) - len(finished)
                print(f"karyo: {missing} cases not finished after {args.timeout} s", file=sys.stderr)
                return 1
            time.sleep(0.5)
        wall_s = time.monotonic() - started  # polled every 0.5 s: up to that much late
        reports = [
            report
            for case_id, case in finished.items()
            if case["status"] == "done"
            for report in _check(http.get(f"{url}/v1/cases/{case_id}/report")).json()["reports"]
        ]
        if args.delete:  # the measurement's cases leave the clinic's history again
            for case_id in case_ids:
                _check(http.delete(f"{url}/v1/cases/{case_id}", timeout=120))
    summary = throughput_summary([finished[c] for c in case_ids], reports, wall_s, submit_s)
    if args.json:
        write_atomically(args.json, (json.dumps(summary, indent=1) + "\n").encode())
    print(
        f"{summary['done']}/{summary['cases']} cases done ({summary['failed']} failed), {summary['images']} MCIs in "
        f"{summary['wall_s']} s: {summary['images_per_hour']} MCIs/hour; latency p50 {summary['latency_s']['p50']} s, "
        f"p95 {summary['latency_s']['p95']} s; worker compute {summary['compute_s_per_image']} s per MCI "
        + json.dumps(summary["compute_ms_per_image"])
    )
    return 0 if summary["failed"] == 0 else 1


def cmd_cases_delete(args: argparse.Namespace) -> int:
    url, headers = _client(args)
    _check(httpx.delete(f"{url}/v1/cases/{args.id}", headers=headers, timeout=120))
    print(f"deleted {args.id}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="karyo", description="Karyoflow service commands")
    commands = parser.add_subparsers(dest="command", required=True)

    def client(p: argparse.ArgumentParser) -> None:
        p.add_argument("--api", default=None, help="API URL (default: the stack's, or $KARYO_API_URL)")
        p.add_argument("--key", default=None, help="API key (default: the stack's, or $KARYO_API_KEY)")

    stack = commands.add_parser("stack", help="a local stack without Docker").add_subparsers(dest="what", required=True)
    up = stack.add_parser("up", help="start Redis, SeaweedFS, the database, the API, workers and the sweeper")
    up.add_argument("--dir", type=Path, default=None, help="state folder (default: $KARYO_STACK_DIR)")
    up.add_argument("--sqlite", action="store_true", help="SQLite instead of the machine's PostgreSQL")
    up.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    up.add_argument("--api-port", type=int, default=8700)
    up.add_argument("--redis-port", type=int, default=6391)
    up.add_argument("--s3-port", type=int, default=18333)
    up.add_argument("--flower-port", type=int, default=5566)
    up.set_defaults(func=cmd_stack_up)
    stack.add_parser("down", help="stop the stack").set_defaults(func=cmd_stack_down)
    stack.add_parser("status", help="processes, queue depths, cases by status").set_defaults(func=cmd_stack_status)

    submit = commands.add_parser("submit", help="upload one case (one or more MCIs)")
    submit.add_argument("files", nargs="+", type=Path)
    submit.add_argument("--reference", default="", help="patient or sample reference")
    submit.add_argument("--wait", action="store_true", help="block until the case is done or failed")
    submit.add_argument("--timeout", type=float, default=900)
    submit.add_argument("--json", action="store_true")
    client(submit)
    submit.set_defaults(func=cmd_submit)

    cases = commands.add_parser("cases", help="query the case history").add_subparsers(dest="what", required=True)
    listing = cases.add_parser("list")
    listing.add_argument("--status")
    listing.add_argument("--karyotype")
    listing.add_argument("--reference")
    listing.add_argument("--since", help="ISO time")
    listing.add_argument("--until", help="ISO time")
    listing.add_argument("--limit", type=int, default=50)
    flag = listing.add_mutually_exclusive_group()
    flag.add_argument("--abnormal", dest="abnormal", action="store_const", const="true", default=None)
    flag.add_argument("--normal", dest="abnormal", action="store_const", const="false")
    listing.add_argument("--json", action="store_true")
    client(listing)
    listing.set_defaults(func=cmd_cases_list)
    show = cases.add_parser("show")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    client(show)
    show.set_defaults(func=cmd_cases_show)
    karyogram = cases.add_parser("karyogram")
    karyogram.add_argument("id")
    karyogram.add_argument("--image", type=int, default=0)
    karyogram.add_argument("--out", type=Path, required=True)
    client(karyogram)
    karyogram.set_defaults(func=cmd_cases_karyogram)
    erase = cases.add_parser("delete", help="erase a finished case: its images, results and rows")
    erase.add_argument("id")
    client(erase)
    erase.set_defaults(func=cmd_cases_delete)

    throughput = commands.add_parser("throughput", help="MCIs per hour and latency of a running deployment")
    throughput.add_argument("files", nargs="+", type=Path, help="MCIs (images, labelme JSON) or folders of them")
    throughput.add_argument("--cases", type=int, default=8, help="one-image cases, submitted back to back (default 8)")
    throughput.add_argument("--reference", default="throughput", help="reference prefix of the cases")
    throughput.add_argument("--timeout", type=float, default=1800)
    throughput.add_argument("--json", type=Path, default=None, help="write the figures here")
    throughput.add_argument("--delete", action="store_true", help="erase the measurement's cases afterwards")
    client(throughput)
    throughput.set_defaults(func=cmd_throughput)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SERVICE_COMMANDS:
        return core_cli.main(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (core_cli.UsageError, InputError) as error:
        print(f"karyo: error: {error}", file=sys.stderr)
        return 2
    except httpx.HTTPError as error:
        print(f"karyo: error: cannot reach the API ({error})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
